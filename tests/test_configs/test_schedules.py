"""The shared schedules of configs/_base_/schedules/, run by mmengine's own Runner on a toy model: each target's
learning rate, iteration by iteration, equals the written-out schedule the targets had before the schedule was
shared (an explicit ``end`` at the run's length), and the shared one follows a change of the run's length."""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from tests.test_configs.smoke import ROOT

TARGETS = {  # target config -> its loop, and the schedule it spelled out before sharing (LinearLR end, cosine)
    'configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py': True,
    'configs/target/oriented-rcnn-le90_convnextv2-atto_flora-r10_400it_target-dota.py': False,
    'configs/target/upernet_convnextv2-atto_flora-r10_2k_target-ade20k.py': False,
}


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.w - 1).pow(2).sum())


class RecordLR(Hook):
    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def learning_rates(tmp_path, scheduler, by_epoch: bool, length: int, iters_per_epoch: int = 7) -> list:
    """The learning rate of every training iteration of a Runner with ``scheduler`` and ``length`` epochs (of
    ``iters_per_epoch`` iterations) or iterations."""
    loop = dict(by_epoch=True, max_epochs=length) if by_epoch else dict(by_epoch=False, max_iters=length)
    iters_per_epoch = iters_per_epoch if by_epoch else length  # mmengine sleeps 2 s where an iteration loop restarts
    record = RecordLR()
    runner = Runner(model=Toy(), work_dir=str(tmp_path), train_cfg=dict(loop, val_interval=10 ** 6),
                    train_dataloader=DataLoader([dict(inputs=torch.zeros(1))] * iters_per_epoch, batch_size=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.0)), param_scheduler=scheduler,
                    custom_hooks=[record], default_hooks=dict(checkpoint=None), default_scope='mmengine', log_level='WARNING')
    runner.train()
    return record.lrs


@pytest.mark.parametrize('path', sorted(TARGETS))
def test_target_schedule_equals_its_written_out_form(path, tmp_path):
    cfg = Config.fromfile(str(ROOT / path))
    by_epoch = TARGETS[path]
    length = cfg.train_cfg['max_epochs' if by_epoch else 'max_iters']
    written_out = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
                   dict(type='CosineAnnealingLR', by_epoch=by_epoch, begin=0, end=length, eta_min_ratio=0.01)]
    shared = learning_rates(tmp_path / 'shared', cfg.param_scheduler, by_epoch, length)
    assert shared == pytest.approx(learning_rates(tmp_path / 'written', written_out, by_epoch, length), rel=1e-12)


@pytest.mark.parametrize('piece,by_epoch', [('warmup50_cosine_iter', False), ('warmup50_cosine_epoch', True)])
def test_shared_schedule_follows_the_run_length(piece, by_epoch, tmp_path):
    """Warm-up from 1% to the full rate over 50 iterations, then down to 1% at the end of a 30-epoch / 300-iteration
    run (the cosine's ``end`` is the loop's length, not a number written in the config)."""
    scheduler = Config.fromfile(str(ROOT / 'configs/_base_/schedules/warmup_cosine.py'))[piece]
    length, per_epoch = (30, 10) if by_epoch else (300, 300)
    lrs = learning_rates(tmp_path, scheduler, by_epoch, length, iters_per_epoch=per_epoch)
    assert len(lrs) == 300 and lrs[0] == pytest.approx(0.01)
    # after the warm-up: the closed-form cosine of the step (epoch) reached, within 1e-3 (mmengine chains both
    # schedulers recursively, so the warm-up leaves a trace of ~5e-4 on the cosine)
    step = (lambda i: i // per_epoch) if by_epoch else (lambda i: i)
    cosine = [0.01 + 0.99 * (1 + math.cos(math.pi * step(i) / length)) / 2 for i in range(300)]
    assert lrs[60:] == pytest.approx(cosine[60:], abs=1e-3)

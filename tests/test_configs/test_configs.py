"""Every config builds; each task's smoke config trains, validates, tests, checkpoints and resumes."""
import glob
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner

import flora_mm.mm  # noqa: F401
from flora_mm.adapters import adapter_state_dict, count_parameters
from tests.test_configs.smoke import ROOT, TASK_CONFIGS, smoke_config

CONFIGS = sorted(str(Path(p).relative_to(ROOT)) for p in glob.glob(str(ROOT / 'configs/**/*.py'), recursive=True)
                 if '/_base_/' not in p)  # _base_ fragments are pieces of configs, not configs
#: the fast lane (make test-fast) builds the entry points; the baselines only in the full run
ENTRY = ('configs/flora_', 'configs/target/', 'configs/synthetic/')
CONFIG_CASES = [c if c.startswith(ENTRY) else pytest.param(c, marks=pytest.mark.slow) for c in CONFIGS]


@pytest.mark.parametrize('path', CONFIG_CASES)
def test_config_loads_and_builds_on_meta_device(path):
    cfg = Config.fromfile(str(ROOT / path))
    init_default_scope(cfg.default_scope)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    counts = count_parameters(model)
    adapter = cfg.model.backbone.get('adapter')
    assert (counts['adapter'] > 0) == (adapter is not None), path
    if 'full' in path:
        assert counts['trainable'] == counts['total']
    else:
        assert counts['trainable'] < counts['total'] * 0.5


def test_paper_budgets_of_the_convnext_configs():
    budgets = {}
    for name in ('lora_r8', 'flora_r42', 'lora_r16', 'flora_r84', 'lora_r25', 'flora_r129'):
        method = name.replace('_', '-')
        cfg = Config.fromfile(str(ROOT / f'configs/baselines/mask-rcnn_convnextv2-l_{method}_1x_coco.py'))
        init_default_scope('mmdet')
        with torch.device('meta'):
            budgets[name] = count_parameters(MODELS.build(cfg.model.backbone))['adapter']
    for lora, flora in (('lora_r8', 'flora_r42'), ('lora_r16', 'flora_r84'), ('lora_r25', 'flora_r129')):
        assert abs(budgets[flora] / budgets[lora] - 1) < 0.01, (lora, flora, budgets)


class Snapshot(Hook):
    """Records the model's tensors after weight init (before_train) and at the end (after_train)."""

    def before_train(self, runner):
        self.before = {k: v.clone() for k, v in runner.model.state_dict().items()}

    def after_train(self, runner):
        self.after = {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize('task', TASK_CONFIGS)
def test_smoke_train_val_test_checkpoint_and_resume(task, tmp_path):
    cfg = smoke_config(task, tmp_path)
    runner = Runner.from_cfg(cfg)
    snap = Snapshot()
    runner.register_hook(snap)
    runner.train()
    metrics = runner.test()
    assert metrics, 'test produced no metric'
    adapter_keys = {f'backbone.{k}' for k in adapter_state_dict(runner.model.backbone)}
    base_keys = {k for k in snap.before if k.startswith('backbone.') and k not in adapter_keys
                 and not k.startswith(('backbone.norm', 'backbone.up'))}
    assert base_keys and all(torch.equal(snap.before[k], snap.after[k]) for k in base_keys)
    changed = {k for k in snap.before if not torch.equal(snap.before[k], snap.after[k])}
    assert changed & adapter_keys, 'adapters did not train'
    assert any(not k.startswith('backbone.') for k in changed), 'heads did not train'
    ckpt = Path(cfg.work_dir) / 'iter_2.pth'
    assert ckpt.exists()

    # resume: adapters and optimizer state come back, training continues from iteration 2
    cfg2 = smoke_config(task, tmp_path, iters=3)
    cfg2.resume, cfg2.load_from = True, str(ckpt)
    runner2 = Runner.from_cfg(cfg2)
    runner2.load_or_resume()
    assert runner2.iter == 2
    restored = runner2.model.state_dict()
    assert all(torch.equal(restored[k], snap.after[k]) for k in adapter_keys)
    saved = torch.load(ckpt, map_location='cpu')  # weights_only=True: needs flora_mm.compat
    assert saved['optimizer']['state'], 'optimizer state missing from the checkpoint'
    state = runner2.optim_wrapper.optimizer.state
    assert len(state) == len(saved['optimizer']['state'])


@pytest.mark.slow
def test_mpc_regulariser_is_a_logged_training_loss(tmp_path):
    """An mm model whose adapter has an MPC regulariser returns ``loss_mpc`` with its training losses (summed into
    the loss mmengine back-propagates, logged as its own key); the value is the adapter's own mpc_loss."""
    from flora_mm.adapters import mpc_loss
    cfg = smoke_config('ade20k', tmp_path)
    cfg.model.backbone.adapter.update(mpc='diagonal', mpc_weight=0.5)
    runner = Runner.from_cfg(cfg)
    runner.train()
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    assert 'loss_mpc: ' in log and 'loss_mpc added to the training losses' in log
    model = runner.model
    model.train()
    data = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
    losses = model(**data, mode='loss')
    torch.testing.assert_close(losses['loss_mpc'], mpc_loss(model.backbone))
    plain = smoke_config('ade20k', tmp_path / 'plain')
    runner = Runner.from_cfg(plain)
    assert 'loss_mpc' not in runner.model(**runner.model.data_preprocessor(
        next(iter(runner.train_dataloader)), True), mode='loss')

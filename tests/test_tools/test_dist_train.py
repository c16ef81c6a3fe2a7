"""tools/dist_train.sh on 2 CPU processes (gloo): DDP with a frozen base, no find_unused_parameters, identical
adapters; the InternViT FSDP configs (full fine-tuning and with an adapter) train, save, resume and match a
single-process run."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import tests.test_tools.rank_dump  # noqa: F401  (registers the test hooks for in-process runs)
from tests.test_configs.smoke import ROOT, smoke_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.subprocess
def test_dist_train_two_cpu_processes(tmp_path):
    cfg = smoke_config('coco', tmp_path)
    cfg.custom_imports = dict(imports=['flora_mm', 'tests.test_tools.rank_dump'], allow_failed_imports=False)
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type='RankAdapterDumpHook')]
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=False)
    path = tmp_path / 'smoke_coco.py'
    cfg.dump(str(path))
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), str(path), '2', '--work-dir', cfg.work_dir],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / 'work' / f'adapter_rank{r}.pth') for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert any(k.endswith('flora_core') and v.abs().sum() > 0 for k, v in ranks[0].items()), 'adapters did not train'


@pytest.mark.subprocess
def test_test_tool_evaluates_a_checkpoint(tmp_path):
    from mmengine.runner import Runner
    cfg = smoke_config('coco', tmp_path)
    Runner.from_cfg(cfg).train()
    path = tmp_path / 'smoke_coco.py'
    cfg.dump(str(path))
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/test.py'), str(path), str(tmp_path / 'work/iter_2.pth'),
                           '--work-dir', str(tmp_path / 'eval'), '--out', str(tmp_path / 'preds.pkl')],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    assert (tmp_path / 'preds.pkl').exists()


def _dist(config, tmp_path, work, *extra):
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), str(config), '2', '--work-dir', str(work),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _fsdp_config(variant, tmp_path):
    """The InternViT smoke config on mmengine's FlexibleRunner + FSDPStrategy: ``full`` is the shipped
    full-fsdp baseline; ``adapter`` the FLoRA config with that baseline's strategy (a frozen base sharded next
    to trainable adapters). Four training images, two per rank and step, in order."""
    from mmengine.config import Config

    from tests.test_configs import smoke
    cfg = smoke.smoke_config('internvit_ade20k', tmp_path)
    fsdp = Config.fromfile(str(ROOT / 'configs/baselines/upernet_internvit-6b_full-fsdp_160k_ade20k-504x504.py'))
    cfg.runner_type, cfg.strategy = fsdp.runner_type, fsdp.strategy
    if variant == 'full':
        cfg.model.backbone.adapter = None
        cfg.custom_hooks = []
    if variant == 'adapter_mpc':  # the regulariser's terms come from each sharded block's own forward
        cfg.model.backbone.adapter.update(mpc='orthogonal', mpc_weight=0.1)
    cfg.custom_imports = dict(imports=['flora_mm', 'tests.test_tools.rank_dump'], allow_failed_imports=False)
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type='RankTrainInfoHook')]
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.dropout_ratio = 0.0  # no random draw in the loss: FSDP and one process must agree exactly
    return cfg


@pytest.mark.subprocess
@pytest.mark.parametrize('variant', ['full', 'adapter', 'adapter_mpc'])
def test_fsdp_two_cpu_processes_train_resume_and_match_one_process(variant, tmp_path):
    cfg = _fsdp_config(variant, tmp_path)
    path = tmp_path / 'fsdp.py'
    cfg.dump(str(path))
    work = tmp_path / 'fsdp'
    _dist(path, tmp_path, work)
    info = [json.loads((work / f'train_info_rank{r}.json').read_text()) for r in (0, 1)]
    assert info[0]['fsdp_units'] == 1 + 4  # the root and one per transformer block (TINY_VIT: depth 4)
    assert info[0]['trainable'] == info[1]['trainable']
    assert (work / 'iter_2.pth').exists()
    log = _dist(path, tmp_path, work, '--resume', '--cfg-options', 'train_cfg.max_iters=3')
    assert 'resumed' in log.lower() and 'Iter(train) [3/3]' in log

    # one process, same runner without sharding, rank 0's two images: the same trainable set and first loss
    single = _fsdp_config(variant, tmp_path)
    single.strategy = dict(type='SingleDeviceStrategy')  # the runner's init order (and RNG draws) stay the same
    single.train_dataloader.dataset.indices = [0, 2]  # what DefaultSampler gives rank 0 of 2
    single.work_dir = str(tmp_path / 'single')
    from flora_mm.engine.launch import build_runner
    build_runner(single).train()
    ref = json.loads((tmp_path / 'single' / 'train_info_rank0.json').read_text())
    assert info[0]['trainable'] == ref['trainable']
    if variant != 'full':
        assert ref['trainable'] and all('flora_' in n or n.startswith(('backbone.up', 'decode_head', 'auxiliary'))
                                        for n in ref['trainable'])
    assert abs(info[0]['losses'][0]['loss'] - ref['losses'][0]['loss']) < 1e-4, (info[0]['losses'], ref['losses'])
    if variant == 'adapter_mpc':  # logged as its own key, the same on every rank and in one process, also after a step
        for step in (0, 1):
            values = [info[0]['losses'][step]['loss_mpc'], info[1]['losses'][step]['loss_mpc'],
                      ref['losses'][step]['loss_mpc']]
            assert max(values) - min(values) < 1e-4 * max(values), (step, values)

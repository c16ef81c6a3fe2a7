"""tools/dist_train.sh on 2 CPU processes (gloo): frozen base, no find_unused_parameters, identical adapters."""
import os
import socket
import subprocess
import sys

import torch

from tests.test_configs.smoke import ROOT, smoke_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


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

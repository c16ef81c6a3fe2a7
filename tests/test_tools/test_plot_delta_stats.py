"""flora_mm.engine.logs.delta_curves / tools/plot_delta_stats.py draw Fig. 4-style curves from the logs of real
(smoke) training runs."""
import subprocess
import sys

import pytest
from mmengine.runner import Runner
from PIL import Image

from flora_mm.engine.logs import delta_curves
from tests.test_configs.smoke import ROOT, smoke_config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    work_dirs = {}
    for method in ('FLoRA', 'LoRA'):
        tmp = tmp_path_factory.mktemp(method)
        cfg = smoke_config('coco', tmp, iters=3)
        cfg.model.backbone.adapter = dict(type=method, rank=2)
        cfg.custom_hooks = [dict(type='DeltaWeightStatsHook', interval=1)]
        cfg.visualizer.name = f'delta_{method}'  # mmdet names its visualizer instance; runs must not share it
        Runner.from_cfg(cfg).train()
        work_dirs[method] = cfg.work_dir
    return work_dirs


@pytest.mark.slow
def test_curves_follow_the_hook_scalars(runs):
    data = delta_curves(runs['FLoRA'])
    steps, fro = data['fro']
    assert steps == [1, 2, 3] and all(v > 0 for v in fro)
    assert data['amp'][0] == steps and all(v > 0 for v in data['amp'][1])
    layer = delta_curves(runs['LoRA'], layer='backbone.stages.0.blocks.0.mlp.fc1')
    assert layer['fro'][0] == [1, 2, 3]


@pytest.mark.subprocess
def test_cli_writes_a_png(runs, tmp_path):
    out = tmp_path / 'fig4.png'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/plot_delta_stats.py'), runs['FLoRA'], runs['LoRA'],
                           '--labels', 'FLoRA', 'LoRA', '--out', str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'FLoRA: fro' in proc.stdout and 'LoRA: amp' in proc.stdout
    assert Image.open(out).size[0] > 500


def test_a_run_without_the_hook_is_reported(tmp_path):
    cfg = smoke_config('coco', tmp_path, iters=1)
    cfg.visualizer.name = 'no_delta_hook'
    Runner.from_cfg(cfg).train()
    with pytest.raises(ValueError, match='DeltaWeightStatsHook'):
        delta_curves(cfg.work_dir)

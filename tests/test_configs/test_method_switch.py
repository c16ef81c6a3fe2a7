"""Switching the adapter method of a shipped config from the command line (README: ``--cfg-options
model.backbone.adapter.type=LoRA``): options of the other method are dropped with a warning, a typo is an error."""
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

import flora_mm.mm  # noqa: F401
from flora_mm.adapters import AdapterState, count_parameters
from flora_mm.data import make_coco
from flora_mm.engine.launch import load_run_config
from tests.test_configs.smoke import ROOT

DEMO = 'configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py'


@pytest.mark.parametrize('options, expected', [
    *(({'model.backbone.adapter.type': m}, m) for m in ('LoRA', 'DoRA', 'TriLoRA', 'IA3', 'SSL', 'SSB', 'BitFit',
                                                         'FLoRA')),
    ({'model.backbone.adapter.mpc': 'orthogonal'}, 'FLoRA'),
    ({'model.backbone.adapter.dora': True}, 'FLoRA'),
    ({'model.backbone.adapter': None}, None),
])
def test_every_method_switch_builds_on_the_demo_config(options, expected):
    cfg = load_run_config(str(ROOT / DEMO), cfg_options={**options, 'model.backbone.init_cfg': None})
    init_default_scope(cfg.default_scope)
    with torch.device('meta'):
        backbone = MODELS.build(cfg.model.backbone)
    state = getattr(backbone, 'adapter_state', None)
    assert (state.config.type if isinstance(state, AdapterState) else None) == expected


def test_a_typo_in_a_switched_config_is_still_an_error():
    cfg = load_run_config(str(ROOT / DEMO), cfg_options={'model.backbone.adapter.type': 'LoRA',
                                                         'model.backbone.adapter.rnak': 4,
                                                         'model.backbone.init_cfg': None})
    init_default_scope(cfg.default_scope)
    with torch.device('meta'), pytest.raises(ValueError, match=r"unknown option\(s\) \['rnak'\]"):
        MODELS.build(cfg.model.backbone)


@pytest.mark.subprocess
def test_tools_train_switches_the_demo_config_to_lora(tmp_path):
    data = make_coco(tmp_path / 'coco', num_train=2, num_val=1, img_size=64)
    ann = str(data / 'annotations' / 'instances_val2017.json')
    options = ['model.backbone.adapter.type=LoRA', 'model.backbone.init_cfg=None',
               f'train_dataloader.dataset.data_root={data}/', f'val_dataloader.dataset.data_root={data}/', f'test_dataloader.dataset.data_root={data}/',
               f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1']
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/train.py'), str(ROOT / DEMO), '--work-dir',
                           str(tmp_path / 'work'), '--cfg-options', *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "LoRA adapter: ignoring option(s) ['kernel_rank'], which only other adapter types use" in log
    # the optimizer summary counts LoRA's adapter parameters, not FLoRA's
    counts = {}
    for method in ('LoRA', 'FLoRA'):
        cfg = load_run_config(str(ROOT / DEMO), cfg_options={'model.backbone.adapter.type': method,
                                                             'model.backbone.init_cfg': None})
        init_default_scope(cfg.default_scope)
        with torch.device('meta'):
            counts[method] = count_parameters(MODELS.build(cfg.model.backbone))['adapter']
    summary = next(line for line in log.splitlines() if line.startswith('backbone '))
    assert summary.split()[-1] == f"{counts['LoRA']:,}" != f"{counts['FLoRA']:,}"
    assert 'coco/bbox_mAP' in log

"""tools/pretrain_base.py writes a timm-format checkpoint that the demo's backbone loads via init_cfg."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from flora_mm.data import SOURCE_SHAPES, source_scene
from flora_mm.models import ConvNeXtV2
from tests.test_configs.smoke import ROOT


def test_source_scene_is_deterministic_and_labelled():
    a, la = source_scene(np.random.default_rng(3), 6, 32)
    b, lb = source_scene(np.random.default_rng(3), 6, 32)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8 and la.shape == (6, 32, 32)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert la.max() <= len(SOURCE_SHAPES) and (la > 0).any() and (la == 0).any()
    for img, lab in zip(a, la):  # shapes contrast with the background: labelled pixels differ in colour
        if (lab > 0).any():
            fg, bg = img[lab > 0].mean(0), img[lab == 0].mean(0)
            assert np.abs(fg - bg).sum() > 40


@pytest.mark.subprocess
def test_pretrain_quick_run_loads_through_init_cfg(tmp_path):
    out = tmp_path / 'base.pth'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/pretrain_base.py'), '--out', str(out), '--steps', '2',
                           '--batch', '4', '--img-size', '32', '--arch', 'atto'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(out.with_suffix('.json').read_text())
    assert info['steps'] == 2 and set(info['source_val']) == {'objectness_acc', 'shape_acc', 'miou'}
    assert all(0.0 <= v <= 1.0 for v in info['source_val'].values())
    state = torch.load(out)
    assert 'stages.3.blocks.1.mlp.fc2.weight' in state and not any(k.startswith('head') for k in state)
    backbone = ConvNeXtV2('atto', adapter=dict(type='FLoRA', rank=4),
                          init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    backbone.init_weights()
    assert torch.equal(backbone.state_dict()['stages.2.blocks.0.conv_dw.weight'],
                       state['stages.2.blocks.0.conv_dw.weight'])

"""The adapter core is plain PyTorch: with mmengine, mmcv and timm unavailable it imports, injects, trains, merges
and round-trips state dicts, and importing it patches nothing."""
import subprocess
import sys
import textwrap

import pytest

from tests.test_configs.smoke import ROOT

SCRIPT = textwrap.dedent('''
    import sys
    for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmrotate', 'timm'):
        sys.modules[name] = None  # any import of them now raises ImportError
    import torch
    safe_before = list(torch.serialization.get_safe_globals())
    load_before = torch.load
    from torch import nn
    import flora_mm.adapters as A
    import flora_mm
    assert not flora_mm.WITH_MMENGINE and not hasattr(flora_mm, 'engine')
    assert list(torch.serialization.get_safe_globals()) == safe_before and torch.load is load_before
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmcv', 'timm')
                    and sys.modules[m] is not None)
    assert not loaded, loaded

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    x = torch.randn(2, 3, 6, 6)
    ref = model(x)
    A.inject_adapters(model, dict(type='FLoRA', rank=2, scale=4.0))
    assert torch.allclose(model(x), ref)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(x).square().mean().backward()
    opt.step()
    trained = model(x).detach()
    state = A.adapter_state_dict(model)
    twin = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k not in state}, strict=False)
    A.inject_adapters(twin, dict(type='FLoRA', rank=2, scale=4.0))
    A.load_adapter_state_dict(twin, state)
    assert torch.allclose(twin(x), trained, atol=1e-6)
    merged = A.merge_adapters(model)
    assert type(merged[0]) is nn.Conv2d and torch.allclose(merged(x), trained, atol=1e-5)
    print('plain pytorch ok')
''')


@pytest.mark.subprocess
def test_adapter_core_without_openmmlab_or_timm():
    proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'plain pytorch ok' in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]

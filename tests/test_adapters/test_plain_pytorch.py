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
    assert not hasattr(flora_mm, 'engine') and not hasattr(flora_mm, 'mm')
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


WITH_MMENGINE = textwrap.dedent('''
    import sys
    import torch
    from mmengine import registry as R
    from mmengine.dist import utils as dist_utils
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmengine._strategy.fsdp import FSDPStrategy

    def snapshot():
        registries = {name: getattr(R, name) for name in dir(R) if isinstance(getattr(R, name), R.Registry)}
        return dict(safe_globals=list(torch.serialization.get_safe_globals()), load=torch.load,
                    init_dist=dist_utils._init_dist_pytorch, local_loader=CheckpointLoader._schemes[''],
                    fsdp_optim=FSDPStrategy.load_optim_state_dict,
                    builds={n: r.build_func for n, r in registries.items()},
                    modules={n: sorted(r.module_dict) for n, r in registries.items()})

    before = snapshot()
    import flora_mm
    import flora_mm.adapters as A
    from torch import nn
    model = A.inject_adapters(nn.Sequential(nn.Linear(4, 4)), dict(type='LoRA', rank=2))
    model(torch.randn(1, 4)).sum().backward()
    assert snapshot() == before, {k: v for k, v in snapshot().items() if v != before[k]}
    assert not any(m in sys.modules for m in ('flora_mm.mm', 'flora_mm.engine', 'flora_mm.models', 'flora_mm.compat'))
    import flora_mm.mm  # the explicit entry does change them
    after = snapshot()
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == ['builds', 'fsdp_optim', 'init_dist', 'local_loader', 'modules', 'safe_globals'], changed
    print('core import changes nothing')
''')


@pytest.mark.subprocess
def test_importing_the_core_changes_nothing_in_mmengine_torch_or_the_registries():
    proc = subprocess.run([sys.executable, '-c', WITH_MMENGINE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'core import changes nothing' in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]

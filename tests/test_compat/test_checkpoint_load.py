"""torch >= 2.6 loads with weights_only=True: mmengine's own checkpoints must still load (after import flora_mm)."""
import io

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

import flora_mm.mm  # noqa: F401  (applies the fixes)


def _checkpoint_bytes():
    hub = MessageHub.get_instance('test_compat')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', np.float64(0.1))
    hub.update_info('iter', np.int64(3))
    ckpt = dict(state_dict={'w': torch.ones(2)}, message_hub=hub.state_dict(),
                meta=dict(seed=np.int64(3), scores=np.arange(3, dtype=np.float32), flag=np.bool_(True)))
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    return buf


def test_mmengine_checkpoint_loads_with_weights_only():
    ckpt = torch.load(_checkpoint_bytes())  # the default of torch >= 2.6 is weights_only=True
    restored = MessageHub.get_instance('test_compat_restored')
    restored.load_state_dict(ckpt['message_hub'])
    assert restored.get_scalar('train/loss').current() == 1.5
    assert ckpt['meta']['scores'].tolist() == [0.0, 1.0, 2.0]


class Evil:
    def __reduce__(self):
        return (print, ('pwned', ))


class SneakyGetattr:
    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


@pytest.mark.parametrize('obj, match', [(Evil(), 'print'), (SneakyGetattr(), 'refusing getattr')])
def test_arbitrary_objects_are_still_refused(obj, match):
    buf = io.BytesIO()
    torch.save({'x': obj}, buf)
    buf.seek(0)
    with pytest.raises(Exception, match=match):
        torch.load(buf)


def test_cpu_distributed_init_without_cuda(monkeypatch):
    from mmengine.dist import utils as dist_utils
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '29611')
    dist_utils._init_dist_pytorch('gloo')  # mmengine's own version calls torch.cuda.set_device and fails
    try:
        assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.subprocess
def test_checkpoint_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys
    path = tmp_path / 'ckpt.pth'
    path.write_bytes(_checkpoint_bytes().getvalue())
    code = f"import flora_mm.mm, torch; c = torch.load({str(path)!r}); print(sorted(c))"
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'message_hub' in proc.stdout

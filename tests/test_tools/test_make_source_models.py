"""flora_mm.weights.source_models (tools/make_source_models.py): the shipped source task models regenerate bit for
bit (on a two-iteration schedule), ship only what their frozen base lacks, and load strictly into their configs'
models."""
import os
import shlex
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from flora_mm import weights
from flora_mm.weights import source_models as tool
from tests.test_configs.smoke import ROOT

QUICK = dict(  # two iterations on 8 images of 64 px, validated
    coco=['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1'],
    dota=['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2'],
    ade20k=['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2'])
SHIPPED = {spec['name']: task for task, spec in tool.TASKS.items() if spec['name'] in weights.WEIGHTS}


def _build(task: str):
    import flora_mm.mm  # noqa: F401
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(ROOT / tool.TASKS[task]['config']))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.pop('init_cfg')
    return MODELS.build(cfg.model)


@pytest.mark.subprocess
@pytest.mark.parametrize('task', list(tool.TASKS))
def test_regeneration_is_bit_identical_and_exports_only_the_heads(task, tmp_path):
    files, procs = [], []
    for run in ('a', 'b'):  # two independent runs at once, with the same thread count: they must match bit for bit
        cmd = [sys.executable, str(ROOT / 'tools' / 'make_source_models.py'), task, '--root', str(tmp_path / run),
               '--out-dir', str(tmp_path / run / 'out'), '--num-train', '8', '--num-val', '4', '--img-size', '64',
               '--cfg-options', *QUICK[task]]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env=dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')))
        files.append(tmp_path / run / 'out' / f'{tool.TASKS[task]["name"]}.pth')
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert weights.sha256(files[0]) == weights.sha256(files[1])
    exported = torch.load(files[0])
    base = torch.load(weights.WEIGHTS[tool.BASE].path)
    model_keys = set(_build(task).state_dict())
    # exactly the model's tensors that the base does not hold: neck, heads, the backbone's output norms
    assert set(exported) == model_keys - {tool.PREFIX + k for k in base}
    assert any(k.startswith('backbone.norm') for k in exported)
    assert all(v.dtype == torch.float16 for v in exported.values() if v.is_floating_point())


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_shipped_task_model_loads_strictly_with_its_base(name):
    task = SHIPPED[name]
    entry = weights.WEIGHTS[name]
    assert entry.base == tool.BASE
    argv = shlex.split(entry.command)
    assert argv[1:3] == ['tools/make_source_models.py', task]
    model = _build(task)
    state = weights.load(f'flora_mm://{name}')
    model.load_state_dict(state, strict=True)
    own = torch.load(entry.path)
    key = next(k for k in own if k.startswith('roi_head') or k.startswith('decode_head'))
    torch.testing.assert_close(model.state_dict()[key], own[key].float(), rtol=0, atol=0)
    torch.testing.assert_close(model.state_dict()['backbone.stem.0.weight'],
                               torch.load(weights.WEIGHTS[tool.BASE].path)['stem.0.weight'].float(), rtol=0, atol=0)


def test_export_refuses_a_backbone_that_moved(tmp_path):
    base = weights.load(f'flora_mm://{tool.BASE}')
    state = {tool.PREFIX + k: v.float().clone() for k, v in base.items()}
    state['neck.conv.weight'] = torch.ones(2)
    ckpt = tmp_path / 'ok.pth'
    torch.save(dict(state_dict=state), ckpt)
    assert set(tool.export(ckpt, tmp_path / 'ok_out.pth')) == {'neck.conv.weight'}
    state[tool.PREFIX + 'stem.0.weight'] += 1e-3
    torch.save(dict(state_dict=state), ckpt)
    with pytest.raises(ValueError, match=r"not the frozen base 'convnextv2_atto_source'.*1 changed \['stem.0.weight'"):
        tool.export(ckpt, tmp_path / 'bad.pth')

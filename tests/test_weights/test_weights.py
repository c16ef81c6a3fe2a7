"""Shipped weights: found by name, SHA-256 checked, loadable from any config, regenerated bit for bit."""
import dataclasses
import shlex

import pytest
import torch

from flora_mm import weights
from flora_mm.models import ConvNeXtV2
from tests.test_configs.smoke import ROOT


@pytest.mark.parametrize('name', list(weights.WEIGHTS))
def test_every_shipped_file_matches_its_sha256_and_stays_small(name):
    entry = weights.WEIGHTS[name]
    assert weights.resolve(f'flora_mm://{name}') == entry.path
    assert weights.sha256(entry.path) == entry.sha256  # independent of resolve's own check
    assert entry.path.stat().st_size <= 10 * 2**20 and entry.licence == 'Apache-2.0'


def test_shipped_base_loads_by_name_through_init_cfg():
    entry = weights.WEIGHTS['convnextv2_atto_source']
    model = ConvNeXtV2('atto', adapter=dict(type='FLoRA', rank=2),
                       init_cfg=dict(type='Pretrained', checkpoint='flora_mm://convnextv2_atto_source'))
    model.init_weights()
    state = torch.load(entry.path)
    assert all(v.dtype == torch.float16 for v in state.values())
    for key in ('stem.0.weight', 'stages.3.blocks.1.mlp.fc2.weight', 'stages.2.blocks.0.mlp.grn.weight'):
        torch.testing.assert_close(model.state_dict()[key], state[key].float(), rtol=0, atol=0)


def test_mmengine_loader_knows_the_scheme():
    from mmengine.runner.checkpoint import CheckpointLoader
    state = CheckpointLoader.load_checkpoint('flora_mm://convnextv2_atto_source', map_location='cpu')
    assert 'stages.0.blocks.0.conv_dw.weight' in state


def test_unknown_missing_or_corrupt_weights_are_refused(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match=r"no shipped weights named 'convnextv2_huge'; known: \['convnextv2_atto"):
        weights.resolve('flora_mm://convnextv2_huge')
    entry = weights.WEIGHTS['convnextv2_atto_source']
    corrupt = tmp_path / entry.file
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    monkeypatch.setattr(weights, 'FOLDER', tmp_path)
    with pytest.raises(ValueError, match=rf'has SHA-256 [0-9a-f]{{64}}, expected {entry.sha256}.*regenerate it '
                                         r'with: python tools/pretrain_base.py'):
        weights.resolve('flora_mm://convnextv2_atto_source')
    corrupt.unlink()
    with pytest.raises(FileNotFoundError, match='is missing; regenerate it with'):
        weights.resolve('flora_mm://convnextv2_atto_source')


def test_regeneration_is_bit_identical_on_a_short_schedule(tmp_path):
    """The shipped command's settings, shortened: two runs write byte-identical files (same tensors, same
    torch.save bytes), and the command names what the shipped file holds."""
    from flora_mm.weights.pretrain import pretrain
    entry = weights.WEIGHTS['convnextv2_atto_source']
    argv = shlex.split(entry.command)
    assert argv[1] == 'tools/pretrain_base.py' and argv[argv.index('--out') + 1] == f'flora_mm/weights/{entry.file}'
    dtype = argv[argv.index('--dtype') + 1]
    files = []
    for run in ('a', 'b'):
        out = tmp_path / run / entry.file
        out.parent.mkdir()
        pretrain(out, steps=2, batch=4, img_size=32, dtype=dtype, log_every=1)
        files.append(out)
    first, second = (torch.load(f) for f in files)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert weights.sha256(files[0]) == weights.sha256(files[1])
    assert all(v.dtype == torch.float16 for v in first.values())
    shipped = torch.load(entry.path)
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in shipped.items()}


def test_entries_are_immutable_records():
    with pytest.raises(dataclasses.FrozenInstanceError):
        weights.WEIGHTS['convnextv2_atto_source'].sha256 = '0' * 64
    assert (ROOT / 'flora_mm' / 'weights').samefile(weights.FOLDER)


def test_a_task_model_checks_the_sha256_of_its_base_too(tmp_path, monkeypatch):
    """Loading a shipped task model (neck and heads) adds its base backbone's tensors: that base file is checked
    like any other -- a corrupt base is refused even though the task model's own file is intact."""
    task = weights.WEIGHTS['mask_rcnn_atto_source_coco']
    base = weights.WEIGHTS[task.base]
    (tmp_path / task.file).write_bytes(task.path.read_bytes())
    data = bytearray(base.path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tmp_path / base.file).write_bytes(bytes(data))
    monkeypatch.setattr(weights, 'FOLDER', tmp_path)
    with pytest.raises(ValueError, match=rf'flora_mm://{task.base}: .* has SHA-256 [0-9a-f]{{64}}, expected '
                                         rf'{base.sha256}'):
        weights.load("flora_mm://mask_rcnn_atto_source_coco")

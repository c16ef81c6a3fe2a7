"""Adapter-only checkpoints: saved by the hook, loaded back onto the pretrained base (test, resume, Python API),
swapped in one process, and refused with a list of reasons when they do not fit."""
import copy
import hashlib
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner

from flora_mm.adapters import adapter_parameters
from flora_mm.engine import adapter_checkpoint, is_adapter_only, load_adapter_checkpoint
from flora_mm.models import ConvNeXtV2
from tests.test_configs.smoke import ROOT, TINY_CONVNEXT, smoke_config


def _with_base(tmp_path, seed=1):
    """The coco smoke config on a 'pretrained' tiny ConvNeXt-V2 saved in timm format."""
    torch.manual_seed(seed)
    base = tmp_path / f'base{seed}.pth'
    state = ConvNeXtV2(TINY_CONVNEXT).state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith(('stem.', 'stages.'))}, base)
    cfg = smoke_config('coco', tmp_path)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(base))
    return cfg, base


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('adapter_ckpt')
    cfg, base = _with_base(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    final = {k: v.clone() for k, v in runner.model.state_dict().items()}
    return cfg, base, tmp_path / 'work/iter_2.pth', final, runner.model


def test_hook_saves_only_what_training_changed(trained, tmp_path):
    cfg, base, ckpt_path, final, model = trained
    ckpt = torch.load(ckpt_path, map_location='cpu')
    assert is_adapter_only(ckpt)
    meta = ckpt['meta']['flora_mm']
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and set(meta['frozen_keys']) == frozen and not frozen & set(ckpt['state_dict'])
    assert {f'backbone.{k}' for k in adapter_parameters(model.backbone)} <= set(ckpt['state_dict'])
    assert any(k.startswith('roi_head.') for k in ckpt['state_dict'])
    assert meta['adapters']['backbone']['type'] == 'FLoRA'
    assert meta['base'][0]['checkpoint'] == str(base) and len(meta['base'][0]['sha256']) == 64
    full = tmp_path / 'full.pth'
    torch.save(dict(ckpt, state_dict=final), full)
    assert meta['state_bytes'] < meta['full_state_bytes']
    assert ckpt_path.stat().st_size < full.stat().st_size


def test_runner_test_rebuilds_the_base_and_loads_the_adapter(trained, tmp_path):
    cfg, _, ckpt_path, final, _ = trained
    cfg = copy.deepcopy(cfg)
    cfg.work_dir, cfg.load_from = str(tmp_path / 'test'), str(ckpt_path)
    runner = Runner.from_cfg(cfg)
    assert runner.test()
    loaded = runner.model.state_dict()
    assert loaded.keys() == final.keys()
    assert all(torch.equal(loaded[k], final[k]) for k in final)


def test_resume_from_an_adapter_only_checkpoint(trained, tmp_path):
    cfg, _, ckpt_path, final, _ = trained
    cfg = copy.deepcopy(cfg)
    cfg.work_dir, cfg.load_from, cfg.resume = str(tmp_path / 'resume'), str(ckpt_path), True
    cfg.train_cfg.max_iters = 3
    runner = Runner.from_cfg(cfg)
    runner._init_model_weights()  # what runner.train() does before load_or_resume()
    runner.load_or_resume()
    assert runner.iter == 2
    assert all(torch.equal(v, final[k]) for k, v in runner.model.state_dict().items())


@pytest.mark.subprocess
def test_tools_test_with_adapter_flag(trained, tmp_path):
    cfg, _, ckpt_path, _, _ = trained
    path = tmp_path / 'cfg.py'
    cfg.dump(str(path))
    common = [sys.executable, str(ROOT / 'tools/test.py'), str(path), '--work-dir', str(tmp_path / 'w')]
    proc = subprocess.run([*common, '--adapter', str(ckpt_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    proc = subprocess.run(common, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and 'exactly one of CHECKPOINT and --adapter' in proc.stderr


def _perturbed_checkpoint(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model.backbone).values():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = dict(state_dict={k: v.clone() for k, v in model.state_dict().items()}, meta={})
    adapter_checkpoint(model, ckpt)
    return ckpt


def test_swapping_adapters_in_one_process(trained):
    cfg = trained[0]
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    a, b = _perturbed_checkpoint(model, 1), _perturbed_checkpoint(model, 2)
    x = torch.rand(1, 3, 64, 64)
    outputs = []
    for ckpt in (a, b, a):
        load_adapter_checkpoint(model, ckpt)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in ckpt['state_dict'].items())
        with torch.no_grad():
            outputs.append(model.eval().backbone(x)[-1])
    assert not torch.allclose(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize('change, message', [
    (lambda cfg, tmp: cfg.model.backbone.adapter.update(rank=3), 'shape mismatch'),
    (lambda cfg, tmp: cfg.model.backbone.update(init_cfg=dict(type='Pretrained',
                                                              checkpoint=str(_with_base(tmp, seed=2)[1]))),
     'is not the base the adapter was trained on'),
    (lambda cfg, tmp: cfg.model.backbone.update(init_cfg=None), 'has no Pretrained init_cfg'),
    (lambda cfg, tmp: setattr(cfg.model.backbone, 'adapter', dict(type='LoRA', rank=2)), 'unexpected keys'),
])
def test_checkpoint_that_does_not_fit_is_refused_with_reasons(trained, tmp_path, change, message):
    cfg, _, ckpt_path, _, _ = trained
    cfg = copy.deepcopy(cfg)
    change(cfg, tmp_path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((KeyError, ValueError), match=message):
        load_adapter_checkpoint(model, str(ckpt_path))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing modified


def test_checkpoint_missing_a_trained_tensor_is_refused(trained):
    """An adapter-only checkpoint without one of the adapter's trained tensors (a truncated save, a filter bug)
    must not load silently and leave that tensor at its initial value."""
    cfg, _, ckpt_path, _, model = trained
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    core = next(k for k in ckpt['state_dict'] if k.endswith('flora_core'))
    del ckpt['state_dict'][core]
    fresh = MODELS.build(copy.deepcopy(cfg.model))
    with pytest.raises(KeyError, match=rf"missing keys.*{core}"):
        load_adapter_checkpoint(fresh, ckpt)


def test_full_checkpoint_is_not_taken_for_an_adapter(trained, tmp_path):
    model = trained[4]
    with pytest.raises(ValueError, match='not an adapter-only checkpoint'):
        load_adapter_checkpoint(model, dict(state_dict=model.state_dict(), meta={}))


# ------------------------------------------------------------------------------------------ base identity
def _claiming(ckpt_path, **base):
    """The trained adapter-only checkpoint, its recorded base replaced by ``base`` (module 'backbone')."""
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    ckpt['meta']['flora_mm']['base'] = [dict(module='backbone', **base)] if base else []
    return ckpt


def test_shipped_base_has_an_identity_the_sha256_of_its_file():
    from flora_mm.models.checkpoint import base_identity
    from flora_mm.weights import WEIGHTS
    path = WEIGHTS['convnextv2_atto_source'].path
    assert base_identity('flora_mm://convnextv2_atto_source') == hashlib.sha256(path.read_bytes()).hexdigest()
    task = WEIGHTS['mask_rcnn_atto_source_coco']
    own, base = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (task.path, path))
    assert base_identity('flora_mm://mask_rcnn_atto_source_coco') == hashlib.sha256(f'{own}+{base}'.encode()).hexdigest()


def test_identity_hashes_the_whole_file(tmp_path):
    """More than one read block (16 MiB) and a change in the last byte: the hash covers every byte."""
    from flora_mm.models.checkpoint import base_identity
    data = bytearray(torch.randint(0, 256, ((17 << 20) + 5, ), dtype=torch.uint8).numpy().tobytes())
    path = tmp_path / 'big.pth'
    path.write_bytes(bytes(data))
    assert base_identity(str(path)) == hashlib.sha256(bytes(data)).hexdigest()
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert base_identity(str(path)) == hashlib.sha256(bytes(data)).hexdigest()


def test_url_base_is_identified_by_its_downloaded_copy(tmp_path, monkeypatch):
    from flora_mm.models.checkpoint import base_identity
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    url = 'https://example.org/weights/convnextv2_tiny.pth?download=1'
    assert base_identity(url) is None  # not downloaded: unknown, never "matches"
    (tmp_path / 'hub/checkpoints').mkdir(parents=True)
    (tmp_path / 'hub/checkpoints/convnextv2_tiny.pth').write_bytes(b'weights')
    assert base_identity(url) == hashlib.sha256(b'weights').hexdigest()
    assert base_identity('s3://bucket/model.pth') is None


def test_adapter_trained_on_a_shipped_base_is_refused_on_another_base(trained):
    """The checkpoint says it was trained on flora_mm://convnextv2_atto_source; the model's base is another file."""
    cfg, base, ckpt_path, _, _ = trained
    from flora_mm.weights import WEIGHTS
    ckpt = _claiming(ckpt_path, checkpoint='flora_mm://convnextv2_atto_source',
                     sha256=WEIGHTS['convnextv2_atto_source'].sha256)
    model = MODELS.build(copy.deepcopy(cfg.model))
    with pytest.raises(ValueError, match=rf'(?s)base {base} \(sha256 [0-9a-f]{{64}}\) is not the base the adapter was '
                                         r'trained on, flora_mm://convnextv2_atto_source.*check_base=False'):
        load_adapter_checkpoint(model, ckpt)


@pytest.mark.parametrize('base, message', [
    (dict(checkpoint='https://example.org/base.pth', sha256=None), 'does not record which file its base'),
    ({}, 'records no pretrained base'),
])
def test_unrecorded_base_is_refused_unless_overridden(trained, base, message):
    cfg, _, ckpt_path, final, _ = trained
    ckpt = _claiming(ckpt_path, **base)
    model = MODELS.build(copy.deepcopy(cfg.model))
    with pytest.raises(ValueError, match=message):
        load_adapter_checkpoint(model, ckpt)
    load_adapter_checkpoint(model, ckpt, check_base=False)  # the explicit override
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())


def test_hook_refuses_an_unrecorded_base_and_its_override_loads(trained, tmp_path):
    cfg, _, ckpt_path, _, _ = trained
    ckpt = _claiming(ckpt_path, checkpoint='https://example.org/base.pth', sha256=None)
    path = tmp_path / 'claims_url.pth'
    torch.save(ckpt, path)
    for check_base in (True, False):
        run = copy.deepcopy(cfg)
        run.work_dir, run.load_from = str(tmp_path / f'w{check_base}'), str(path)
        run.custom_hooks = [dict(type='AdapterCheckpointHook', check_base=check_base)]
        runner = Runner.from_cfg(run)
        if check_base:
            with pytest.raises(ValueError, match='does not record which file its base'):
                runner.test()
        else:
            assert runner.test()


def test_stock_runner_without_the_hook_never_evaluates_on_a_random_base(trained, tmp_path):
    """A config without AdapterCheckpointHook (stock mm tools): the adapted backbone notices the adapter-only
    state dict and loads its pretrained base first."""
    cfg, base, ckpt_path, final, _ = trained
    run = copy.deepcopy(cfg)
    run.work_dir, run.load_from = str(tmp_path / 'stock'), str(ckpt_path)
    run.custom_hooks = []
    runner = Runner.from_cfg(run)
    runner.load_checkpoint(str(ckpt_path))  # what runner.test() does before testing (no init_weights)
    state = runner.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in final.items())


def test_stock_runner_refuses_an_adapter_without_a_base_to_rebuild(trained, tmp_path):
    cfg, _, ckpt_path, _, _ = trained
    run = copy.deepcopy(cfg)
    run.work_dir, run.custom_hooks = str(tmp_path / 'stock'), []
    run.model.backbone.init_cfg = None
    runner = Runner.from_cfg(run)
    with pytest.raises(RuntimeError, match='adapter would run on random weights'):
        runner.load_checkpoint(str(ckpt_path))


def test_mismatch_errors_print_one_problem_a_line(trained):
    cfg, _, ckpt_path, _, _ = trained
    changed = copy.deepcopy(cfg.model)
    changed.backbone.adapter.update(rank=3)
    with pytest.raises(KeyError) as info:
        load_adapter_checkpoint(MODELS.build(changed), str(ckpt_path))
    text = str(info.value)
    assert '\\n' not in text and text.startswith('adapter-only checkpoint does not fit the model:\n  shape mismatches')


@pytest.mark.parametrize('content, cause', [
    (b'', 'the file is empty'),
    (bytes(range(256)) * 8, 'cannot read checkpoint'),
    (b'PK\x03\x04' + b'\x00' * 100, 'cannot read checkpoint'),
])
def test_unreadable_checkpoint_names_the_file_and_never_advises_unsafe_loading(tmp_path, content, cause):
    from mmengine.runner.checkpoint import CheckpointLoader

    from flora_mm.compat import UnreadableCheckpointError
    path = tmp_path / 'broken.pth'
    path.write_bytes(content)
    for load in (lambda: CheckpointLoader.load_checkpoint(str(path), map_location='cpu'),
                 lambda: load_adapter_checkpoint(torch.nn.Linear(1, 1), str(path))):
        with pytest.raises(UnreadableCheckpointError) as info:
            load()
        text = str(info.value)
        assert str(path) in text and cause in text and f'({len(content):,} bytes)' in text
        assert 'weights_only' not in text


def test_stock_runner_refuses_a_different_base_through_the_state_dict_metadata(trained, tmp_path):
    """Without AdapterCheckpointHook the backbone rebuilds its base from init_cfg -- and compares it with the
    identity the checkpoint carries in its state dict's metadata."""
    cfg, base, ckpt_path, _, _ = trained
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    assert ckpt['state_dict']._metadata['backbone']['flora_mm_base'] == [
        dict(checkpoint=str(base), sha256=hashlib.sha256(base.read_bytes()).hexdigest())]
    run = copy.deepcopy(cfg)
    run.work_dir, run.custom_hooks = str(tmp_path / 'stock'), []
    other = _with_base(tmp_path, seed=2)[1]
    run.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(other))
    runner = Runner.from_cfg(run)
    with pytest.raises(ValueError, match=rf'base {other} \(sha256 [0-9a-f]{{64}}\) is not the base the adapter was '
                                         rf'trained on, {base}'):
        runner.load_checkpoint(str(ckpt_path))

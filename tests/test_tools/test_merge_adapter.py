"""flora_mm.engine.export.merge_checkpoint (tools/merge_adapter.py): a detector and a segmentor give the same outputs
after merging, with no adapter; a merged stock backbone is evaluated by mmengine's runner with flora_mm not
importable."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from flora_mm.adapters import AdapterLayer, adapter_parameters
from flora_mm.engine.export import merge_checkpoint
from tests.test_configs.smoke import smoke_config


@pytest.mark.parametrize('task', ['coco', 'ade20k'])
def test_merged_model_matches_adapted_model(task, tmp_path):
    cfg = smoke_config(task, tmp_path)
    cfg_path = tmp_path / 'adapted.py'
    cfg.dump(str(cfg_path))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = tmp_path / 'adapted.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(note='test')), ckpt)
    before = ckpt.read_bytes()

    merged_ckpt, merged_cfg = merge_checkpoint(str(cfg_path), str(ckpt), str(tmp_path / 'out'))[:2]
    assert ckpt.read_bytes() == before  # the input checkpoint is never modified
    cfg2 = Config.fromfile(str(merged_cfg))
    assert 'adapter' not in cfg2.model.backbone and 'constructor' not in cfg2.optim_wrapper
    assert not any('flora_mm' in str(h['type']) or h['type'] in ('AdapterCheckpointHook', 'FrozenParamsCheckHook')
                   for h in cfg2.get('custom_hooks', []))
    assert cfg2.custom_imports.imports == ['flora_mm.mm']  # flora_mm's own ConvNeXtV2 still needs it
    plain = MODELS.build(cfg2.model)
    plain.load_state_dict(torch.load(merged_ckpt)['state_dict'], strict=True)
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())

    x = torch.rand(2, 3, 64, 64) * 255
    model.eval(), plain.eval()
    with torch.no_grad():
        a, b = (_outputs(m, task, x) for m in (model, plain))
    assert a and len(a) == len(b) and a[0].numel() > 0, "no output to compare"
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, atol=1e-4, rtol=1e-4)


def _outputs(model, task, images):
    """Whole-model outputs: detections (boxes, scores, labels, masks) or segmentation logits."""
    if task == 'ade20k':
        inputs = model.data_preprocessor(dict(inputs=list(images)))['inputs']
        return [model(inputs, mode='tensor')]
    from mmdet.structures import DetDataSample
    samples = []
    for _ in images:
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0),
                                 pad_shape=(64, 64), batch_input_shape=(64, 64)))
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples))
    results = model(data['inputs'], data['data_samples'], mode='predict')
    out = []
    for r in results:
        inst = r.pred_instances
        out += [inst.bboxes, inst.scores, inst.labels.float(), inst.masks.float()]
    return out

def test_refuses_config_without_adapter(tmp_path):
    cfg = smoke_config('coco', tmp_path)
    cfg.model.backbone.adapter = None
    path = tmp_path / 'plain.py'
    cfg.dump(str(path))
    with pytest.raises(ValueError, match='nothing to merge'):
        merge_checkpoint(str(path), str(tmp_path / 'x.pth'), str(tmp_path / 'out'))


# What stock mmdet tools/test.py does (Config.fromfile, Runner.from_cfg, runner.test), in a process where importing
# flora_mm fails as if it were not installed.
WITHOUT_FLORA = textwrap.dedent("""
    import sys

    class NoFlora:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] == 'flora_mm':
                raise ImportError('flora_mm is not installed')

    sys.meta_path.insert(0, NoFlora())
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(sys.argv[1])
    cfg.work_dir = sys.argv[2]
    metrics = Runner.from_cfg(cfg).test()
    assert 'flora_mm' not in sys.modules
    print('METRICS', sorted(metrics))
""")


@pytest.mark.subprocess
def test_merged_stock_backbone_runs_in_stock_mmdet_without_flora_mm(tmp_path):
    cfg = smoke_config('coco', tmp_path)
    cfg.model.backbone = dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), norm_eval=True, style='pytorch',
                              adapter=dict(type='LoRA', rank=2, alpha=4))
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type='DeltaWeightStatsHook')]
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.05)
    cfg_path, ckpt = tmp_path / 'retina.py', tmp_path / 'adapted.pth'
    cfg.dump(str(cfg_path))
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    merged_ckpt, merged_cfg = merge_checkpoint(str(cfg_path), str(ckpt), str(tmp_path / 'out'))[:2]
    text = merged_cfg.read_text()
    assert 'flora_mm' not in text and 'adapter' not in text and 'Adapter' not in text and 'DeltaWeight' not in text
    proc = subprocess.run([sys.executable, '-c', WITHOUT_FLORA, str(merged_cfg), str(tmp_path / 'stock')],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'coco/bbox_mAP'" in proc.stdout

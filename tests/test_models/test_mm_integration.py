"""``backbone.adapter=`` on stock mmdet / mmseg / mmrotate configs: build, freeze, one training iteration."""
import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS, init_default_scope
from mmengine.structures import PixelData

import flora_mm.mm  # noqa: F401
from flora_mm.adapters import AdapterLayer, adapted_layers, adapter_state_dict

ADAPTER = dict(type='FLoRA', rank=2, kernel_rank=2, scale=4.0)


def _mmdet_case():
    from mmdet.testing import demo_mm_inputs
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone.update(depth=18, init_cfg=None, adapter=ADAPTER)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    data = demo_mm_inputs(2, (3, 64, 64), num_items=[2, 3], num_classes=80, with_mask=True)
    return 'mmdet', cfg.model, data


def _mmrotate_case():
    from mmrotate.testing import demo_mm_inputs
    cfg = get_config('mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py')
    cfg.model.backbone.update(depth=18, init_cfg=None, adapter=ADAPTER)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    data = demo_mm_inputs(2, (3, 64, 64), num_items=[2, 3], num_classes=15, use_box_type=True)
    return 'mmrotate', cfg.model, data


def _mmseg_case():
    from mmseg.structures import SegDataSample
    cfg = get_config('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
    cfg.model.backbone.update(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), init_cfg=None,
                              adapter=ADAPTER)
    cfg.model.decode_head.update(in_channels=[16, 32, 64, 128], channels=32)
    cfg.model.auxiliary_head.update(in_channels=64, channels=16)
    cfg.model.pop('pretrained', None)
    samples = []
    for _ in range(2):
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, 64, 64))))
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    return 'mmseg', cfg.model, data


CASES = {'mmdet_mask_rcnn_resnet': _mmdet_case, 'mmrotate_oriented_rcnn_resnet': _mmrotate_case,
         'mmseg_upernet_swin': _mmseg_case}


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES)
def test_stock_config_with_backbone_adapter_trains_one_iteration(case):
    scope, model_cfg, data = CASES[case]()
    init_default_scope(scope)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    backbone = model.backbone
    layers = dict(adapted_layers(backbone))
    assert layers, 'no adapter injected'
    if case != 'mmseg_upernet_swin':  # ResNet frozen_stages=1: stem and layer1 keep no adapter
        assert not any(n.startswith(('conv1', 'layer1.')) for n in layers)
        assert 'layer2.0.conv1' in layers and isinstance(backbone.layer2[0].conv1, AdapterLayer)
    else:
        assert any('attn.w_msa.qkv' in n for n in layers) and any('ffn.layers' in n for n in layers)
    adapter_keys = {f'backbone.{k}' for k in adapter_state_dict(backbone)}
    trainable_backbone = {f'backbone.{n}' for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable_backbone == adapter_keys
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_before

    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='AdapterOptimWrapperConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))))(model)
    losses = model.train_step(data, wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    backbone_changed = {k for k in changed if k.startswith('backbone.')}
    assert backbone_changed and backbone_changed <= adapter_keys, backbone_changed - adapter_keys
    assert any(not k.startswith('backbone.') for k in changed)  # neck / heads train


def test_cfg_options_switch_adapter_type_and_none_disables():
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone.update(depth=18, init_cfg=None, adapter=ADAPTER)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.merge_from_dict({'model.backbone.adapter.type': 'LoRA', 'model.backbone.adapter.scale': 1.0})
    cfg.model.backbone.adapter.pop('kernel_rank')
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert type(model.backbone.layer2[0].conv1).__name__ == 'LoRAConv2d'
    cfg.merge_from_dict({'model.backbone.adapter': None})
    model = MODELS.build(cfg.model)
    assert not list(adapted_layers(model)) and all(p.requires_grad for p in model.backbone.layer4.parameters())


def test_unknown_adapter_type_from_config_is_a_clear_error():
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone.update(depth=18, init_cfg=None, adapter=dict(type='LoHa', rank=2))
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    init_default_scope('mmdet')
    with pytest.raises(Exception, match="unknown adapter type 'LoHa'"):
        MODELS.build(cfg.model)


def test_pretrained_init_cfg_loads_into_base_and_keeps_adapter_identity(tmp_path):
    init_default_scope('mmdet')
    plain = MODELS.build(dict(type='ResNet', depth=18, init_cfg=None))
    path = tmp_path / 'r18.pth'
    torch.save(plain.state_dict(), path)
    adapted = MODELS.build(dict(type='ResNet', depth=18, adapter=ADAPTER,
                                init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    adapted.init_weights()
    own = adapted.state_dict()
    assert all(torch.equal(own[k], v) for k, v in plain.state_dict().items())
    assert all(not v.any() for k, v in own.items() if k.endswith('flora_core'))
    x = torch.randn(1, 3, 64, 64)
    plain.eval(), adapted.eval()
    for a, b in zip(adapted(x), plain(x)):
        torch.testing.assert_close(a, b)


def test_build_hook_keeps_a_backbones_new_layers_trainable_and_unadapted():
    """Any registered backbone that declares ``new_layer_names`` gets the treatment flora_mm's own backbones get
    through the same ``attach_adapter``: those submodules keep their ``requires_grad`` and no adapter."""
    from mmengine.registry import MODELS
    from torch import nn

    from flora_mm.adapters import adapted_layers

    @MODELS.register_module(force=True)
    class _TinyWithNeckNorm(nn.Module):
        new_layer_names = ['out_proj']

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8))
            self.out_proj = nn.Linear(8, 8)

    model = MODELS.build(dict(type='_TinyWithNeckNorm', adapter=dict(type='LoRA', rank=2)))
    assert {n for n, _ in adapted_layers(model)} == {'body.0', 'body.2'}
    assert all(p.requires_grad for p in model.out_proj.parameters())
    assert not model.body[0].weight.requires_grad


@pytest.mark.parametrize('adapter, expected', [
    (dict(type='LoRA', rank=2), ': LoRA on 2 adapted layers, '),  # the two Linear layers, no base tensor unfrozen
    (dict(type='BitFit'), ': BitFit on 3 unfrozen base tensors, '),  # adapts no layer: the three biases
])
def test_attach_adapter_logs_what_it_adapted_and_unfroze(adapter, expected):
    """The build log names what the budget went into: adapted layers, and the base tensors BitFit unfroze."""
    from torch import nn

    from flora_mm.models.builder import attach_adapter
    from tests.logcapture import logged

    module = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8))
    _, messages = logged(lambda: attach_adapter(module, adapter))
    assert [m for m in messages if expected in m], messages

"""ConvNeXtV2 backbone: outputs, adapters, freezing, activation checkpointing and every checkpoint naming."""
import re

import pytest
import torch
from torch import nn

from flora_mm.adapters import adapted_layers, adapter_state_dict, count_parameters
from flora_mm.models import ConvNeXtV2
from flora_mm.models.convnextv2 import checkpoint_filter_fn
from timm.models.convnext import ConvNeXt

ADAPTER = dict(type='FLoRA', rank=4, kernel_rank=2, scale=4.0)
TINY = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64))


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return ConvNeXtV2(TINY, **kw)


def test_outputs_are_multiscale_nchw():
    model = make(out_indices=(1, 3))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 4, 4), (2, 64, 1, 1)]
    assert model.out_channels == [32, 64]
    with pytest.raises(ValueError, match='unknown ConvNeXtV2 arch'):
        ConvNeXtV2('gigantic')
    with pytest.raises(ValueError, match='out_indices'):
        ConvNeXtV2(TINY, out_indices=(4, ))


def test_adapter_identity_at_init_and_freezing():
    plain, x = make(), torch.randn(2, 3, 32, 32)
    adapted = make(adapter=ADAPTER)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    for a, b in zip(adapted(x), plain(x)):
        torch.testing.assert_close(a, b)
    layers = dict(adapted_layers(adapted))
    assert 'stages.2.blocks.0.conv_dw' in layers and 'stages.2.blocks.0.mlp.fc1' in layers and 'stem.0' in layers
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_state_dict(adapted)) | {f'norm{i}.{k}' for i in range(4) for k in ('weight',
                                                                                                      'bias')}


@pytest.mark.parametrize('adapter', [dict(type='FLoRA', rank=2, train_norm=True), dict(type='BitFit', train_norm=True)])
def test_train_norm_leaves_the_frozen_stages_frozen(adapter):
    """``train_norm`` unfreezes the norms of the stages the adapter trains, never those ``frozen_stages`` froze."""
    model = make(adapter=adapter, frozen_stages=2)
    norms = {name for name, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))}
    frozen_prefixes = ('stem.', 'stages.0.', 'stages.1.')
    for name, param in model.named_parameters():
        module = name.rsplit('.', 1)[0]
        if name.startswith(frozen_prefixes):
            assert not param.requires_grad, name
        elif module in norms and name.startswith('stages.'):
            assert param.requires_grad, name  # the trained stages' norms do train
    assert any(p.requires_grad for n, p in model.named_parameters() if n.startswith('stages.2.'))


def test_frozen_stages_get_no_adapters_and_train_keeps_trainable_set():
    model = make(adapter=ADAPTER, frozen_stages=2)
    names = [n for n, _ in adapted_layers(model)]
    assert not any(re.match(r'^(stem|stages\.[01])\.', n) for n in names)
    assert any(n.startswith('stages.2.') for n in names)
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == before
    assert not model.stages[1].training and model.stages[2].training


def test_with_cp_matches_and_reaches_adapters_without_input_grad():
    model = make(adapter=ADAPTER, drop_path_rate=0.0)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for with_cp in (False, True):
        model.with_cp = with_cp
        model.zero_grad()
        out = sum(o.square().mean() for o in model(x))
        out.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and any('flora_core' in n for n in grads[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def test_training_step_changes_only_adapters_and_out_norms():
    model = make(adapter=ADAPTER)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        sum(o.mean() for o in model(torch.randn(2, 3, 32, 32))).backward()
        opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed
    assert all('flora_' in k or re.match(r'norm\d\.', k) for k in changed), changed


# --------------------------------------------------------------------------------------- checkpoint namings
def _timm_state():
    torch.manual_seed(3)
    # timm's small ConvNeXt-V2 variants use conv_mlp=True (1x1-conv MLP), a layout the filter must reshape
    return ConvNeXt(depths=TINY['depths'], dims=TINY['dims'], use_grn=True, ls_init_value=None,
                    conv_mlp=True).state_dict()


def _to_official(state):
    out = {}
    for k, v in state.items():
        k2 = re.sub(r'^stem\.', 'downsample_layers.0.', k)
        k2 = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', k2)
        k2 = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', k2)
        k2 = k2.replace('conv_dw', 'dwconv').replace('mlp.fc', 'pwconv')
        if 'mlp.grn' in k2:
            k2 = k2.replace('mlp.grn.weight', 'grn.gamma').replace('mlp.grn.bias', 'grn.beta')
            v = v.reshape(1, 1, 1, -1)
        if 'pwconv' in k2 and v.dim() == 4:
            v = v.flatten(1)  # official: Linear
        out[k2.replace('head.fc.', 'head.').replace('head.norm.', 'norm.')] = v
    return out


def _to_fcmae(official):
    out = {'mask_token': torch.zeros(1, 64, 1, 1), 'decoder.0.weight': torch.zeros(3, 3), 'pred.weight': torch.zeros(1)}
    for k, v in official.items():
        if k.startswith(('head.', 'norm.')):
            continue
        if k.endswith('dwconv.weight'):
            c, _, kh, _ = v.shape
            out['encoder.' + k[:-len('weight')] + 'kernel'] = v.transpose(3, 2).reshape(c, kh * kh).permute(1, 0)
        elif re.match(r'downsample_layers\.[123]\.1\.weight', k):
            o, i, kh, _ = v.shape
            out['encoder.' + k[:-len('weight')] + 'kernel'] = v.transpose(3, 2).reshape(o, i, kh * kh).permute(2, 1, 0)
        elif 'pwconv' in k:
            out['encoder.' + k.replace('.weight', '.linear.weight').replace('.bias', '.linear.bias')] = v
        elif re.match(r'stages\.\d+\.\d+\.norm\.', k):
            out['encoder.' + k.replace('.norm.', '.norm.ln.')] = v
        elif 'grn' in k:
            out['encoder.' + k] = v.reshape(1, -1)
        else:
            out['encoder.' + k] = v
    return {'model': out}


NAMINGS = {
    'timm': lambda s: s,
    'official': _to_official,
    'official_wrapped': lambda s: {'model': _to_official(s)},
    'fcmae': lambda s: _to_fcmae(_to_official(s)),
    'mm_backbone_prefix': lambda s: {'state_dict': {f'backbone.{k}': v for k, v in s.items()}, 'meta': {}},
}


@pytest.mark.parametrize('naming', NAMINGS)
@pytest.mark.parametrize('with_adapter', [False, True])
def test_pretrained_loading_in_every_naming(naming, with_adapter, tmp_path):
    source = _timm_state()
    path = tmp_path / 'ckpt.pth'
    torch.save(NAMINGS[naming](source), path)
    model = make(seed=9, adapter=ADAPTER if with_adapter else None,
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    own = model.state_dict()
    for key, value in source.items():
        if key.startswith('head.'):
            continue
        torch.testing.assert_close(own[key], value.reshape(own[key].shape), msg=key)
    if with_adapter:
        assert all(not v.any() for k, v in own.items() if k.endswith('flora_core'))


def test_checkpoint_that_does_not_fit_raises_with_the_keys():
    state = _timm_state()
    state.pop('stages.0.blocks.0.conv_dw.weight')
    state['extra.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \(1\): \['stages.0.blocks.0.conv_dw.weight'\]"
                                       r"(.|\n)*unexpected keys \(1\): \['extra.weight'\]"):
        make().load_pretrained(state)
    with pytest.raises(KeyError, match='shape mismatches'):
        ConvNeXtV2(dict(depths=TINY['depths'], dims=(16, 32, 48, 72))).load_pretrained(_timm_state())


def test_filter_is_pure():
    state = _to_official(_timm_state())
    snapshot = {k: v.clone() for k, v in state.items()}
    checkpoint_filter_fn(state, make())
    assert state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)


def test_large_builds_on_meta_device_with_paper_budgets():
    with torch.device('meta'):
        lora8 = ConvNeXtV2('large', adapter=dict(type='LoRA', rank=8))
        flora = ConvNeXtV2('large', adapter=dict(type='FLoRA', rank=16, kernel_rank=2))
    assert count_parameters(lora8)['adapter'] == 12_946_080  # the paper's LoRA r=8 budget (12.94M)
    assert 0 < count_parameters(flora)['adapter'] < count_parameters(lora8)['adapter']
    assert all(p.is_meta for p in flora.parameters())


def test_train_norm_trains_the_grn_of_every_block():
    """ConvNeXt-V2's global response normalisation (timm's GlobalResponseNorm, a plain module with weight / bias)
    counts as a norm for ``train_norm``, next to the LayerNorms."""
    from timm.layers.grn import GlobalResponseNorm
    model = make(adapter=dict(type='LoRA', rank=2, train_norm=True))
    grn = {f'{n}.{p}' for n, m in model.named_modules() if isinstance(m, GlobalResponseNorm)
           for p, _ in m.named_parameters()}
    layer_norms = {f'{n}.{p}' for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)
                   and not n.startswith('norm') for p, _ in m.named_parameters()}
    assert grn and layer_norms
    assert set(model.adapter_state.extra_trainable) == grn | layer_norms
    assert all(model.get_parameter(n).requires_grad for n in grn)

"""Where adapters go: matching, freezing, errors, whole-model merge and adapter state dicts."""
import pytest
import torch
from torch import nn

from flora_mm.adapters import (AdapterConfig, AdapterLayer, adapted_layers, adapter_parameters, adapter_state_dict,
                               adapter_states, count_parameters, inject_adapters, load_adapter_state_dict,
                               merge_adapters, register_compatible_layer)


class TinyNet(nn.Module):
    """Conv stem, a norm, a block with linear layers, an attention module and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.block = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.block(self.norm(x))
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head(x.mean(1))


def tiny(seed=0):
    torch.manual_seed(seed)
    return TinyNet(), torch.randn(2, 3, 6, 6)


@pytest.mark.parametrize('cfg, match', [
    (dict(type='QLoRA', rank=4), 'unknown adapter type'),
    (dict(rank=4), 'needs a "type"'),
    (dict(type='FLoRA', rank=0), 'rank must be a positive integer'),
    (dict(type='FLoRA', rank=-2), 'rank must be a positive integer'),
    (dict(type='FLoRA', rank=2.5), 'rank must be a positive integer'),
    (dict(type='FLoRA', kernel_rank=0), 'kernel_rank must be a positive integer'),
    (dict(type='FLoRA', ranks=4), r"unknown option\(s\) \['ranks'\]"),
    (dict(type='BitFit', rnak=4), r"unknown option\(s\) \['rnak'\]"),
    (dict(type='LoRA', scale=1.0, alpha=8), 'either scale or alpha'),
    (dict(type='FLoRA', targets=['embedding']), 'unknown target kind'),
    (dict(type='FLoRA', targets=['all']), "only meaningful for BitFit"),
    (dict(type='FLoRA', route='fast'), 'unknown route'),
    (dict(type='FLoRA', route='branch', impl='merged'), 'not both route and impl'),
    (dict(type='FLoRA', init='zeros'), 'unknown init'),
    (dict(type='FLoRA', dropout=1.5), 'dropout must be in'),
    (dict(type='FLoRA', include=['(']), 'is not a regex'),
])
def test_bad_configs_raise_clear_errors(cfg, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdapterConfig.from_dict(cfg)


@pytest.mark.parametrize('cfg, dropped', [
    (dict(type='LoRA', rank=4, kernel_rank=2), ['kernel_rank']),  # a FLoRA config switched to LoRA
    (dict(type='BitFit', rank=4, kernel_rank=2, scale=4.0), ['kernel_rank', 'rank', 'scale']),
    (dict(type='DoRA', rank=4, kernel_rank=2, dropout=0.1), ['kernel_rank']),
])
def test_options_of_another_method_are_dropped_with_a_warning(cfg, dropped, caplog):
    with caplog.at_level('WARNING', logger='flora_mm.adapters.config'):
        parsed = AdapterConfig.from_dict(cfg)
    assert [r.getMessage() for r in caplog.records] == [
        f"{cfg['type']} adapter: ignoring option(s) {dropped}, which only other adapter types use"]
    kept = {k: v for k, v in cfg.items() if k not in dropped}
    assert AdapterConfig.from_dict(parsed.to_dict()) == parsed == AdapterConfig.from_dict(kept)


def test_the_former_option_name_impl_is_read_as_route_with_a_warning(caplog):
    with caplog.at_level('WARNING', logger='flora_mm.adapters.config'):
        parsed = AdapterConfig.from_dict(dict(type='FLoRA', impl='two_pass'))
    assert parsed == AdapterConfig.from_dict(dict(type='FLoRA', route='two_pass'))
    assert [r.getMessage() for r in caplog.records] == [
        "adapter option 'impl' is now called 'route'; reading impl='two_pass' as route"]


def test_alpha_sets_scale():
    assert AdapterConfig.from_dict(dict(type='LoRA', rank=8, alpha=16)).scale == 2.0
    assert AdapterConfig.from_dict(dict(type='FLoRA')).scale == 1.0
    cfg = AdapterConfig.from_dict(dict(type='FLoRA', rank=4, include='block'))
    assert cfg.include == ('block', ) and AdapterConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize('kw, match', [
    (dict(include=['nonexistent']), "include pattern 'nonexistent' matches none"),
    (dict(exclude=['nonexistent']), "exclude pattern 'nonexistent' matches none"),
    (dict(include=['block'], exclude=['block']), 'leave no layer'),
    (dict(targets=['conv3d']), 'no trainable layer'),
    (dict(include=['attn']), 'matches none'),  # nn.MultiheadAttention reads out_proj.weight directly
])
def test_matching_errors(kw, match):
    model, _ = tiny()
    with pytest.raises(ValueError, match=match):
        inject_adapters(model, dict(type='FLoRA', rank=2, **kw))


def test_injection_targets_kinds_include_exclude():
    model, _ = tiny()
    inject_adapters(model, dict(type='LoRA', rank=2, targets=['linear'], include=[r'^block\.'], exclude=[r'\.2$']))
    assert [n for n, _ in adapted_layers(model)] == ['block.0']
    model, _ = tiny()
    inject_adapters(model, dict(type='FLoRA', rank=2))
    assert [n for n, _ in adapted_layers(model)] == ['stem', 'block.0', 'block.2', 'head']
    assert not isinstance(model.attn.out_proj, AdapterLayer)


def test_base_frozen_and_keys_unchanged():
    model, x = tiny()
    keys = list(model.state_dict())
    plain_sd = {k: v.clone() for k, v in model.state_dict().items()}
    inject_adapters(model, dict(type='FLoRA', rank=2))
    adapter_keys = set(adapter_state_dict(model))
    assert [k for k in model.state_dict() if k not in adapter_keys] == keys
    assert {n for n, p in model.named_parameters() if p.requires_grad} == adapter_keys
    # a plain (un-adapted) checkpoint still loads, adapters stay at identity
    missing, unexpected = model.load_state_dict(plain_sd, strict=False)
    assert set(missing) == adapter_keys and not unexpected
    ref, _ = tiny()
    torch.testing.assert_close(model(x), ref(x))


def test_bitfit_and_extra_trainable_options():
    model, _ = tiny()
    inject_adapters(model, dict(type='BitFit'))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'stem.bias', 'norm.bias', 'block.0.bias', 'block.2.bias', 'head.bias'}
    assert set(adapter_state_dict(model)) == trainable
    model, _ = tiny()
    inject_adapters(model, dict(type='LoRA', rank=2, targets=['linear'], train_bias=True, train_norm=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {'norm.weight', 'norm.bias', 'block.0.bias', 'head.bias', 'block.0.lora_A'} <= trainable
    assert 'stem.bias' not in trainable and 'stem.weight' not in trainable
    assert count_parameters(model)['adapter'] == count_parameters(model)['trainable']


def test_respect_frozen_skips_layers_the_model_froze():
    model, _ = tiny()
    model.stem.requires_grad_(False)
    inject_adapters(model, dict(type='FLoRA', rank=2), respect_frozen=True)
    assert 'stem' not in dict(adapted_layers(model))
    assert not any(p.requires_grad for p in model.stem.parameters())


def test_double_injection_refused():
    model, _ = tiny()
    inject_adapters(model, dict(type='FLoRA', rank=2))
    with pytest.raises(ValueError, match='already contains adapters'):
        inject_adapters(model, dict(type='LoRA', rank=2))


@pytest.mark.parametrize('method', ['FLoRA', 'LoRA', 'DoRA'])
def test_whole_model_merge(method):
    model, x = tiny()
    keys = list(model.state_dict())
    inject_adapters(model, dict(type=method, rank=2))
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.1)
    expected = model(x)
    merge_adapters(model)
    assert list(model.state_dict()) == keys
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)
    inject_adapters(model, dict(type='FLoRA', rank=2))  # a merged model can be adapted again


def test_merge_refuses_non_finite_and_leaves_model_unchanged():
    model, x = tiny()
    inject_adapters(model, dict(type='LoRA', rank=2))
    with torch.no_grad():
        model.head.lora_B.fill_(float('inf'))
        model.head.lora_A.fill_(1.0)
    stem_weight = model.stem.weight.clone()
    with pytest.raises(FloatingPointError, match='head'):
        merge_adapters(model)
    assert isinstance(model.stem, AdapterLayer) and torch.equal(model.stem.weight, stem_weight)
    head_weight = model.head.weight.clone()
    with pytest.raises(FloatingPointError, match='non-finite'):  # a single layer checks by itself
        model.head.merge()
    assert isinstance(model.head, AdapterLayer) and torch.equal(model.head.weight, head_weight)


def test_load_adapter_state_dict_reports_every_mismatch():
    model, _ = tiny()
    inject_adapters(model, dict(type='FLoRA', rank=2))
    sd = adapter_state_dict(model)
    other, _ = tiny()
    inject_adapters(other, dict(type='FLoRA', rank=3))
    with pytest.raises(KeyError, match=r'shape mismatches \(\d+\): .*head.flora_core: given'):
        load_adapter_state_dict(other, sd)
    bad = dict(sd)
    bad.pop('stem.flora_core')
    bad['stem.lora_A'] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \(1\): \['stem.flora_core'\]"
                                       r"(.|\n)*unexpected keys \(1\): \['stem.lora_A'\]"):
        load_adapter_state_dict(model, bad)


def test_nested_model_sees_inner_adapter_state():
    model, x = tiny()
    inject_adapters(model.block, dict(type='BitFit'))
    outer = nn.Sequential(model)
    assert set(adapter_state_dict(outer)) == {'0.block.0.bias', '0.block.2.bias'}


def test_custom_forward_subclasses_need_registration():
    class PaddedConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    class SameConv(nn.Conv2d):
        def forward(self, x):  # e.g. an empty-tensor wrapper: same operator
            return super().forward(x)

    model = nn.Sequential(PaddedConv(3, 4, 3), SameConv(4, 4, 3), nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match='matches none'):
        inject_adapters(model, dict(type='FLoRA', rank=2, include=['^0$']))
    register_compatible_layer(SameConv)
    inject_adapters(model, dict(type='FLoRA', rank=2))
    assert [n for n, _ in adapted_layers(model)] == ['1', '2']
    with pytest.raises(TypeError, match='not a subclass'):
        register_compatible_layer(nn.GELU)


def test_single_layer_model_is_returned_adapted():
    base = nn.Linear(4, 4)
    layer = inject_adapters(base, dict(type='FLoRA', rank=2))
    assert isinstance(layer, AdapterLayer)
    assert layer.weight is base.weight and layer.bias is base.bias
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert all(p.requires_grad for p in layer.adapter_parameters().values())
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == set(layer.adapter_names)
    assert type(merge_adapters(layer)) is nn.Linear


def test_training_step_changes_only_adapters():
    model, x = tiny()
    inject_adapters(model, dict(type='FLoRA', rank=2, scale=4.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(adapter_state_dict(model))
    assert {k for k in changed if k.endswith('flora_core')} == {f'{n}.flora_core' for n in
                                                               ['stem', 'block.0', 'block.2', 'head']}


def test_keep_trainable_modules_are_neither_adapted_nor_frozen():
    model, _ = tiny()
    inject_adapters(model, dict(type='FLoRA', rank=2), keep_trainable=['head'])
    assert 'head' not in dict(adapted_layers(model))
    assert all(p.requires_grad for p in model.head.parameters())
    assert 'head.weight' not in model.adapter_state.frozen and 'stem.weight' in model.adapter_state.frozen
    with pytest.raises(ValueError, match='keep_trainable names no submodule'):
        inject_adapters(tiny()[0], dict(type='FLoRA', rank=2), keep_trainable=['nope'])


def test_adapter_states_finds_every_adapted_module_by_clean_name():
    model = nn.ModuleDict(dict(a=nn.Sequential(nn.Linear(4, 4)), b=nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))))
    inject_adapters(model['a'], dict(type='LoRA', rank=2))
    inject_adapters(model['b'], dict(type='BitFit'))
    states = {name: (module, state.config.type, state.layers) for name, module, state in adapter_states(model)}
    assert states == {'a': (model['a'], 'LoRA', ('0', )), 'b': (model['b'], 'BitFit', ())}
    merge_adapters(model)
    assert not list(adapter_states(model))

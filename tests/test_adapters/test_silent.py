"""Nothing selected or set silently: options that would do nothing are errors (or a warning), every norm-like
module counts for ``train_norm``, and the bookkeeping of what was unfrozen is exact."""
import math

import pytest
import torch
from torch import nn

from flora_mm.adapters import (AdapterConfig, adapter_parameters, count_parameters, inject_adapters,
                               norm_layer_types, register_norm_layer)
from flora_mm.adapters.norms import has_split_norm_bias


@pytest.mark.parametrize('cfg, error, match', [
    (dict(type='LoRA', scale=0), ValueError, 'scale must be a finite, non-zero number'),
    (dict(type='FLoRA', scale=0.0), ValueError, 'scale must be a finite, non-zero number'),
    (dict(type='DoRA', scale=float('nan')), ValueError, 'scale must be a finite, non-zero number'),
    (dict(type='LoRA', scale=float('inf')), ValueError, 'scale must be a finite, non-zero number'),
    (dict(type='LoRA', rank=4, alpha=0), ValueError, 'scale must be a finite, non-zero number'),
    (dict(type='LoRA', alpha='8'), TypeError, 'alpha must be a number'),
    (dict(type='FLoRA', dropout=1.0), ValueError, r'dropout must be in \[0, 1\)'),
    (dict(type='FLoRA', dropout=-0.1), ValueError, r'dropout must be in \[0, 1\)'),
    (dict(type='LoRA', rank=True), ValueError, 'rank must be a positive integer'),
    (dict(type='FLoRA', kernel_rank=False), ValueError, 'kernel_rank must be a positive integer'),
    (dict(type='LoRA', train_norm='yes'), TypeError, 'train_norm must be True or False'),
    (dict(type='LoRA', train_bias=1), TypeError, 'train_bias must be True or False'),
])
def test_settings_that_do_nothing_or_are_malformed_are_errors(cfg, error, match):
    with pytest.raises(error, match=match):
        AdapterConfig.from_dict(cfg)


def test_negative_scale_warns_and_is_kept(caplog):
    with caplog.at_level('WARNING', logger='flora_mm.adapters.config'):
        cfg = AdapterConfig.from_dict(dict(type='LoRA', scale=-1))
    assert cfg.scale == -1.0
    assert 'negative scale -1' in caplog.text


@pytest.mark.parametrize('method', ['BitFit', 'IA3', 'SSL', 'SSB'])
def test_methods_without_a_scale_have_none_to_check(method):
    assert not hasattr(AdapterConfig.from_dict(dict(type=method)), 'scale')


class Body(nn.Module):
    """A plain-module RMSNorm (as InternViT's), a GRN-like module with gamma / beta, linear layers without bias."""

    class MyRMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6, bias=False)
        self.norm = self.MyRMSNorm(6)
        self.fc2 = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


def test_train_norm_without_any_norm_is_an_error_naming_what_it_looked_for():
    with pytest.raises(ValueError, match=r'train_norm=True, but the model has no normalisation layer.*LayerNorm'):
        inject_adapters(Body(), dict(type='LoRA', rank=2, train_norm=True))


def test_train_norm_unfreezes_a_norm_type_the_backbone_declares():
    model = inject_adapters(Body(), dict(type='LoRA', rank=2, train_norm=True), norm_types=(Body.MyRMSNorm, ))
    assert model.adapter_state.extra_trainable == ('norm.weight', )
    assert model.norm.weight.requires_grad and 'norm.weight' in adapter_parameters(model)


def test_train_norm_unfreezes_a_registered_norm_type():
    class OtherNorm(Body.MyRMSNorm):
        pass

    class Net(Body):
        def __init__(self):
            super().__init__()
            self.norm = OtherNorm(6)

    assert OtherNorm not in norm_layer_types()
    register_norm_layer(OtherNorm)
    assert OtherNorm in norm_layer_types()
    model = inject_adapters(Net(), dict(type='LoRA', rank=2, train_norm=True))
    assert model.adapter_state.extra_trainable == ('norm.weight', )


def test_register_norm_layer_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match='needs an nn.Module subclass'):
        register_norm_layer(len)


def test_train_bias_on_layers_without_bias_is_an_error():
    with pytest.raises(ValueError, match=r'train_bias=True, but none of the 2 selected layers has a bias'):
        inject_adapters(Body(), dict(type='LoRA', rank=2, train_bias=True))


def test_frozen_lists_exactly_the_parameters_left_frozen():
    """``AdapterState.frozen`` is what injection froze: never a BitFit bias or a train_norm parameter it unfroze."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    inject_adapters(model, dict(type='BitFit', train_norm=True))
    state = model.adapter_state
    frozen_now = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert set(state.frozen) == frozen_now == {'0.weight', '2.weight'}
    assert set(state.extra_trainable) == {'0.bias', '1.weight', '1.bias', '2.bias'}
    assert not set(state.frozen) & set(state.extra_trainable)


class Wrapped(nn.Module):
    """What FSDP / activation checkpointing wrappers do to qualified names: insert a component."""

    def __init__(self, inner):
        super().__init__()
        self._checkpoint_wrapped_module = inner

    def forward(self, x):
        return self._checkpoint_wrapped_module(x)


def test_extra_trainables_are_found_through_wrapper_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    inject_adapters(model, dict(type='BitFit'))
    bias = model[0].bias
    model[0] = Wrapped(model[0])  # as a checkpoint / FSDP wrapper of a block: 0._checkpoint_wrapped_module.bias
    assert '0._checkpoint_wrapped_module.bias' in dict(model.named_parameters())
    params = adapter_parameters(Wrapped(model))
    assert set(params) == {'0.bias', '1.bias'}
    assert params['0.bias'] is bias


def test_count_parameters_base_is_the_model_before_injection():
    torch.manual_seed(0)
    for adapter in (dict(type='BitFit'), dict(type='LoRA', rank=2), dict(type='FLoRA', rank=2)):
        model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))
        before = sum(p.numel() for p in model.parameters())
        counts = count_parameters(inject_adapters(model, adapter))
        assert counts['base'] == before, adapter
        new = 0 if adapter['type'] == 'BitFit' else 2 * (8 + 8) + 2 * (8 + 3) + (4 + 4) * (adapter['type'] == 'FLoRA')
        assert counts['total'] == before + new, adapter


class Explodes(nn.Module):
    def forward(self, x):
        raise RuntimeError('boom')


def test_split_norm_mode_is_left_even_when_the_forward_raises():
    """A norm with a frozen weight and a trainable bias runs its forward under a torch-function mode; the mode is
    exited by an always-called forward hook, so an exception inside the module leaves no mode behind."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    inject_adapters(model, dict(type='BitFit'))
    assert has_split_norm_bias(model[1])
    model[1].add_module('boom', Explodes())
    model[1].forward = lambda x: model[1].boom(x)  # the module's own forward raises
    depth = torch._C._len_torch_function_stack()
    with pytest.raises(RuntimeError, match='boom'):
        model(torch.randn(2, 4))
    assert torch._C._len_torch_function_stack() == depth


@pytest.mark.parametrize('init, check', [
    ('kaiming', lambda f, r: abs(f.std().item() - 1 / math.sqrt(2 * r)) < 0.02),  # N(0, 1 / (2 r)): a = sqrt(3)
    ('gaussian', lambda f, r: abs(f.std().item() - 1.0) < 0.03),
    ('orthogonal', lambda f, r: torch.allclose(f.t() @ f, torch.eye(r), atol=1e-5)),
])
def test_flora_factor_initialisations(init, check):
    """The factor laws the docstring states, checked on their statistics: Kaiming normal with ``a = sqrt(3)``
    (entries N(0, 1/(2 r)); ``a = sqrt(5)`` would give 1/(3 r)), standard normal, orthonormal columns."""
    torch.manual_seed(0)
    layer = inject_adapters(nn.Linear(3000, 4000), dict(type='FLoRA', rank=4, init=init))
    assert torch.count_nonzero(layer.flora_core) == 0
    for factor in layer.factors:
        assert check(factor.detach(), 4), (init, factor.shape, factor.std())


@pytest.mark.parametrize('method', ['FLoRA', 'LoRA', 'DoRA'])
def test_eval_mode_keeps_the_adapter_gradient_path(method):
    """In eval mode with gradients enabled (e.g. a validation loss, or test-time adaptation) the adapter's
    parameters still get their exact gradient, as in training mode."""
    torch.manual_seed(0)
    layer = inject_adapters(nn.Linear(6, 5), dict(type=method, rank=2))
    with torch.no_grad():
        for p in layer.adapter_parameters().values():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(3, 6)
    grads = []
    for mode in (True, False):
        layer.train(mode)
        layer.zero_grad()
        layer(x).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in layer.adapter_parameters().items()})
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0
        torch.testing.assert_close(grads[1][name], grads[0][name])

"""Norms with a frozen weight and a trainable bias (BitFit) compute ``norm(x, w, None) + b``: exact, and the fused
CUDA kernel that fails in that configuration (issue: rows > 65,536) is never called with it."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torch.overrides import TorchFunctionMode

from flora_mm.adapters import inject_adapters, merge_adapters
from flora_mm.adapters.norms import has_split_norm_bias


class NormCallSpy(TorchFunctionMode):
    """Records the bias argument of every ``F.layer_norm`` / ``F.group_norm`` call that reaches torch."""

    def __init__(self):
        super().__init__()
        self.biases = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.layer_norm, F.group_norm):
            self.biases.append(kwargs['bias'] if 'bias' in kwargs else (args[3] if len(args) > 3 else None))
        return func(*args, **kwargs)


def reference_norm(x, w, b, reduce_dims, channel_view, groups=None, eps=1e-5):
    """Plain-PyTorch normalisation (mean / biased variance over ``reduce_dims``), then ``* w + b``."""
    shape = x.shape
    if groups is not None:
        x = x.reshape(shape[0], groups, -1)
    mean = x.mean(dim=reduce_dims, keepdim=True)
    var = (x - mean).square().mean(dim=reduce_dims, keepdim=True)
    y = ((x - mean) / torch.sqrt(var + eps)).reshape(shape)
    return y * w.view(channel_view) + b.view(channel_view)


CASES = {
    # name: (norm factory, input shape, reference kwargs)
    'layernorm': (lambda: nn.LayerNorm(8), (3, 5, 8), dict(reduce_dims=(-1, ), channel_view=(8, ))),
    'layernorm_2d_shape': (lambda: nn.LayerNorm((4, 6)), (2, 3, 4, 6),
                           dict(reduce_dims=(-2, -1), channel_view=(4, 6))),
    'timm_layernorm2d': (lambda: LayerNorm2d(8, eps=1e-5), (2, 8, 3, 5),
                         dict(reduce_dims=(1, ), channel_view=(1, 8, 1, 1))),
    'groupnorm': (lambda: nn.GroupNorm(2, 8), (2, 8, 3, 5), dict(reduce_dims=(-1, ), channel_view=(1, 8, 1, 1),
                                                                 groups=2)),
}


def _bitfit(case, **adapter):
    factory, shape, ref_kw = CASES[case]
    torch.manual_seed(0)
    model = nn.Sequential(factory())
    with torch.no_grad():
        model[0].weight.normal_()
        model[0].bias.normal_()
    keys = list(model.state_dict())
    inject_adapters(model, dict(type='BitFit', targets=['all'], **adapter))
    assert list(model.state_dict()) == keys
    return model, torch.randn(shape, requires_grad=True), ref_kw


@pytest.mark.parametrize('case', CASES)
def test_frozen_weight_norm_is_exact_and_never_calls_the_fused_bias(case):
    model, x, ref_kw = _bitfit(case)
    norm = model[0]
    assert not norm.weight.requires_grad and norm.bias.requires_grad
    with NormCallSpy() as spy:
        out = model(x)
    assert spy.biases and all(b is None for b in spy.biases)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    xr = x.detach().clone().requires_grad_()
    br = norm.bias.detach().clone().requires_grad_()
    ref = reference_norm(xr, norm.weight.detach(), br, eps=norm.eps, **ref_kw)
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.bias.grad, br.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('case', CASES)
def test_trainable_weight_takes_the_plain_norm(case):
    model, x, _ = _bitfit(case, train_norm=True)
    with NormCallSpy() as spy:
        model(x)
    assert spy.biases and all(b is model[0].bias for b in spy.biases)


def test_bf16_input_with_fp32_norm_keeps_the_plain_norms_dtype():
    model, x, _ = _bitfit('layernorm')
    x = x.detach().bfloat16()
    plain = F.layer_norm(x, (8, ), model[0].weight, model[0].bias)  # mixed dtypes: torch returns the input's
    assert model(x).dtype == plain.dtype == torch.bfloat16


def test_merge_removes_the_rewrite_and_a_raising_forward_leaves_no_mode_behind():
    model, x, _ = _bitfit('layernorm')
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 7))  # wrong width: the norm raises inside the mode
    with NormCallSpy() as spy:  # the mode was left: a plain call outside the model is not rewritten
        F.layer_norm(x, (8, ), model[0].weight, model[0].bias)
    assert spy.biases[0] is model[0].bias
    merge_adapters(model)
    assert not has_split_norm_bias(model[0])
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks

"""The fused low-rank Linear against the same maths left to autograd."""
import pytest
import torch
import torch.nn.functional as F

from flora_mm.adapters.functional import low_rank_linear


def reference(x, weight, bias, down, up):
    return F.linear(x, weight, bias) + (x @ down) @ up.t()


def operands(shape=(2, 3, 7), d_out=5, rank=3, bias=True, dtype=torch.float64, trainable=('down', 'up', 'x')):
    gen = torch.Generator().manual_seed(0)
    d_in = shape[-1]
    named = dict(x=torch.randn(shape, generator=gen, dtype=dtype), weight=torch.randn(d_out, d_in, generator=gen,
                                                                                        dtype=dtype),
                 bias=torch.randn(d_out, generator=gen, dtype=dtype) if bias else None,
                 down=torch.randn(d_in, rank, generator=gen, dtype=dtype),
                 up=torch.randn(d_out, rank, generator=gen, dtype=dtype))
    for name in trainable:
        named[name].requires_grad_(True)
    return named


@pytest.mark.parametrize('shape,bias,trainable', [
    ((2, 3, 7), True, ('x', 'down', 'up')),
    ((4, 7), False, ('x', 'down', 'up')),
    ((2, 3, 7), True, ('down', 'up')),  # first layer: no input gradient
    ((2, 3, 7), True, ('x', 'up')),  # D frozen: x is not kept
    ((2, 3, 7), True, ('x', 'weight', 'bias', 'down', 'up')),  # W0 trained as well
])
def test_gradcheck(shape, bias, trainable):
    named = operands(shape, bias=bias, trainable=trainable)
    args = tuple(named[k] for k in ('x', 'weight', 'bias', 'down', 'up'))
    assert torch.autograd.gradcheck(low_rank_linear, args)


def test_matches_autograd_reference_in_float32():
    named = operands(shape=(8, 6, 40), d_out=160, rank=8, dtype=torch.float32)
    ref_named = {k: (v.detach().clone().requires_grad_(v.requires_grad) if v is not None else None)
                 for k, v in named.items()}
    out, ref = low_rank_linear(**named), reference(**ref_named)
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for name in ('x', 'down', 'up'):
        torch.testing.assert_close(named[name].grad, ref_named[name].grad, msg=name)


def test_autocast_bf16_casts_like_linear_and_returns_grads_in_param_dtype():
    named = operands(shape=(4, 16), d_out=8, rank=2, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = low_rank_linear(**named)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    for name in ('x', 'down', 'up'):
        assert named[name].grad.dtype == torch.float32, name
    ref = reference(**{k: (v.detach() if v is not None else None) for k, v in named.items()})
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)

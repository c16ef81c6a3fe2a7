"""The fused low-rank Linear against the same maths left to autograd."""
import pytest
import torch
import torch.nn.functional as F

from flora_mm.adapters.functional import low_rank_linear

NAMES = ('x', 'weight', 'bias', 'factor_in', 'factor_out', 'core')


def reference(x, weight, bias, factor_in, factor_out, core=None, scale=1.0):
    d = factor_in if core is None else factor_in @ core.t()
    return F.linear(x, weight, bias) + scale * (x @ d) @ factor_out.t()


def operands(shape=(2, 3, 7), d_out=5, ranks=(3, 3), bias=True, core=False, dtype=torch.float64,
             trainable=('factor_in', 'factor_out', 'x')):
    """``ranks = (r1, r2)``: ``factor_out`` is ``[d_out, r1]``, ``factor_in`` ``[d_in, r2]``, the core ``[r1, r2]``."""
    gen = torch.Generator().manual_seed(0)
    d_in = shape[-1]
    named = dict(x=torch.randn(shape, generator=gen, dtype=dtype),
                 weight=torch.randn(d_out, d_in, generator=gen, dtype=dtype),
                 bias=torch.randn(d_out, generator=gen, dtype=dtype) if bias else None,
                 factor_in=torch.randn(d_in, ranks[1], generator=gen, dtype=dtype),
                 factor_out=torch.randn(d_out, ranks[0], generator=gen, dtype=dtype),
                 core=torch.randn(*ranks, generator=gen, dtype=dtype) if core else None)
    for name in trainable:
        named[name].requires_grad_(True)
    return named


def detached_copy(named):
    return {k: (v.detach().clone().requires_grad_(v.requires_grad) if v is not None else None)
            for k, v in named.items()}


@pytest.mark.parametrize('shape,bias,core,trainable', [
    ((2, 3, 7), True, False, ('x', 'factor_in', 'factor_out')),  # LoRA
    ((4, 7), False, False, ('x', 'factor_in', 'factor_out')),
    ((2, 3, 7), True, True, ('x', 'factor_in', 'core', 'factor_out')),  # FLoRA
    ((2, 3, 7), True, True, ('factor_in', 'core', 'factor_out')),  # first layer: no input gradient
    ((2, 3, 7), True, True, ('x', 'core')),  # factors frozen
    ((2, 3, 7), True, False, ('x', 'factor_out')),  # D frozen: x is not kept
    ((2, 3, 7), True, True, ('x', 'weight', 'bias', 'factor_in', 'core', 'factor_out')),  # W0 trained as well
])
def test_gradcheck(shape, bias, core, trainable):
    named = operands(shape, ranks=(3, 2) if core else (3, 3), bias=bias, core=core, trainable=trainable)

    def fn(*args):
        return low_rank_linear(*args, scale=0.7)

    assert torch.autograd.gradcheck(fn, tuple(named[k] for k in NAMES))


@pytest.mark.parametrize('core,scale', [(False, 1.0), (False, 0.25), (True, 4.0)])
def test_matches_autograd_reference_in_float32(core, scale):
    trainable = ('x', 'factor_in', 'factor_out', 'core') if core else ('x', 'factor_in', 'factor_out')
    named = operands(shape=(8, 6, 40), d_out=160, ranks=(8, 6), core=core, dtype=torch.float32,
                     trainable=trainable) if core else \
        operands(shape=(8, 6, 40), d_out=160, ranks=(8, 8), dtype=torch.float32)
    ref_named = detached_copy(named)
    out, ref = low_rank_linear(**named, scale=scale), reference(**ref_named, scale=scale)
    def close(a, b, **kw):  # float32 sums in another order than autograd's: error relative to the largest entry
        torch.testing.assert_close(a, b, atol=1e-6 * b.abs().max().item(), rtol=1e-5, **kw)

    close(out, ref)
    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for name in trainable:
        close(named[name].grad, ref_named[name].grad, msg=name)


def test_keeps_no_weight_sized_temporaries():
    """Only ``x`` and ``h = x V G^T`` are new tensors saved for backward; ``V G^T`` and ``s U`` are not kept."""
    named = operands(shape=(16, 40), d_out=160, ranks=(8, 6), core=True, dtype=torch.float32,
                     trainable=('factor_in', 'core', 'factor_out'))
    operand_ptrs = {t.untyped_storage().data_ptr() for t in named.values() if t is not None}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in operand_ptrs:
            saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        low_rank_linear(**named, scale=2.0)
    assert sorted(saved) == [(16, 8)]  # h; x is an operand (saved by reference, no copy)


def test_autocast_bf16_casts_like_linear_and_returns_grads_in_param_dtype():
    named = operands(shape=(4, 16), d_out=8, ranks=(2, 3), core=True, dtype=torch.float32,
                     trainable=('x', 'factor_in', 'core', 'factor_out'))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = low_rank_linear(**named, scale=0.5)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    for name in ('x', 'factor_in', 'core', 'factor_out'):
        assert named[name].grad.dtype == torch.float32, name
    ref = reference(**{k: (v.detach() if v is not None else None) for k, v in named.items()}, scale=0.5)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)

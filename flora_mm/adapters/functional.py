"""Fused kernels of the adapter routes (plain PyTorch autograd Functions).

:func:`low_rank_linear` computes ``y = x W0^T + b + (x D) U^T`` -- the ``branch`` route of every Linear adapter
whose update is ``dW = U D^T`` (LoRA: ``D = A^T``, ``U = s B``; FLoRA: ``D = B G^T``, ``U = s A``) -- with the
frozen ``W0`` / ``b`` and without materialising ``dW``. Compared with the same maths left to autograd it saves
two full passes over memory per step, which dominate on CPU because the skinny low-rank products are memory-bound:

* forward: the low-rank output is accumulated into the base GEMM's output in place (``addmm_``) instead of being
  written to a new tensor and added;
* backward: the input gradient ``g W0 + (g U) D^T`` is accumulated the same way instead of summing two
  ``[N, d_in]`` tensors, and ``g U`` is computed once for both the input and the ``D`` gradient.

Saved for backward: ``x`` (needed for ``dL/dD = x^T (g U)``; not kept when neither ``D`` nor ``W0`` needs a
gradient) and the small ``h = x D`` (``[N, r]``, for ``dL/dU = g^T h``). Under autocast every operand is cast
to the autocast dtype, as ``F.linear`` would; gradients come back in each operand's own dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['low_rank_linear']


class _LowRankLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, up: Tensor) -> Tensor:
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype, down.dtype, up.dtype)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        x2, weight, down, up = (t.to(dtype) for t in (x.reshape(-1, x.shape[-1]), weight, down, up))
        with torch.autocast(device, enabled=False):
            h = x2 @ down
            out = x2 @ weight.t() if bias is None else torch.addmm(bias.to(dtype), x2, weight.t())
            out.addmm_(h, up.t())
        ctx.save_for_backward(x2 if ctx.needs_input_grad[1] or ctx.needs_input_grad[3] else None, h, weight, down, up)
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x2, h, weight, down, up = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).to(h.dtype)
        need_x, need_w, need_b, need_down, need_up = ctx.needs_input_grad
        gx = gw = gb = gdown = gup = None
        gh = g @ up if need_x or need_down else None
        if need_x:
            gx = (g @ weight).addmm_(gh, down.t()).view(ctx.x_shape)
        if need_w:  # only when someone trains W0 through this layer as well
            gw = g.t() @ x2
        if need_b:
            gb = g.sum(0)
        if need_down:
            gdown = x2.t() @ gh
        if need_up:
            gup = g.t() @ h
        grads = (gx, gw, gb, gdown, gup)
        return tuple(None if t is None else t.to(dt) for t, dt in zip(grads, ctx.dtypes))


def low_rank_linear(x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, up: Tensor) -> Tensor:
    """``x W0^T + b + (x D) U^T`` with ``weight = W0 [d_out, d_in]``, ``down = D [d_in, r]``,
    ``up = U [d_out, r]`` (see the module docstring). Exact; differentiable in every operand."""
    return _LowRankLinear.apply(x, weight, bias, down, up)

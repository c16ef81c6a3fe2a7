"""Fused kernels of the adapter routes (plain PyTorch autograd Functions).

:func:`low_rank_linear` computes

    y = x W0^T + b + s * x V G^T U^T        (without G: y = x W0^T + b + s * x V U^T)

-- the ``branch`` route of every Linear adapter, whose update is written by role (the package's one notation)
``dW = s U G V^T`` with ``U = factor_out [d_out, r1]``, ``G = core [r1, r2]`` and ``V = factor_in [d_in, r2]``
(LoRA: ``U = lora_B``, ``V = lora_A^T``, no core; FLoRA: ``U = flora_factor_0``, ``V = flora_factor_1``,
``G = flora_core``) -- with the frozen ``W0`` / ``b`` and without materialising ``dW``. Compared with the same
maths left to autograd it saves full passes over memory per step, which dominate on CPU because the skinny
low-rank products are memory-bound, and it keeps no weight-sized temporaries:

* forward: ``D = V G^T`` (``[d_in, r1]``, tiny) is formed once, ``h = x D``, and ``s h U^T`` is accumulated into
  the base GEMM's output in place (``addmm_`` with ``alpha = s``) instead of being written to a new tensor and
  added; no scaled copy of ``U`` is made;
* backward: the input gradient ``g W0 + s (g U) D^T`` is accumulated the same way, ``g U`` is computed once for
  the input and the factor gradients, and ``D`` is re-formed from ``V`` and ``G`` (``d_in r1 r2`` multiply-adds)
  instead of being kept.

Saved for backward: ``x`` (needed for ``dL/dV = s x^T (g U) G``; not kept when neither ``V`` / ``G`` nor ``W0``
needs a gradient), the small ``h`` (``[N, r1]``, for ``dL/dU = s g^T h``) and references to the operands
themselves (parameters: no new memory). Under autocast every operand is cast to the autocast dtype, as
``F.linear`` would; gradients come back in each operand's own dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['low_rank_linear']


def _rank_major(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a product with a small (rank) dimension, computed as ``(b^T a^T)^T`` so that the rank is the
    row count of the GEMM the CPU BLAS runs, which is faster there for small ranks and about equal for large ones
    (``tools/benchmark_layers.py`` prints the measured ratios on the machine at hand). The result is a transposed
    view."""
    return (b.t() @ a.t()).t()


class _LowRankLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, factor_in: Tensor, core: Tensor | None,
                factor_out: Tensor,
                scale: float) -> Tensor:
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (x, weight, bias, factor_in, core, factor_out))
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        x2, weight, v, u = (t.to(dtype) for t in (x.reshape(-1, x.shape[-1]), weight, factor_in, factor_out))
        core = None if core is None else core.to(dtype)
        with torch.autocast(device, enabled=False):
            d = v if core is None else v @ core.t()
            h = _rank_major(x2, d)
            out = x2 @ weight.t() if bias is None else torch.addmm(bias.to(dtype), x2, weight.t())
            out.addmm_(h, u.t(), alpha=scale)
        need_x = any(ctx.needs_input_grad[i] for i in (1, 3, 4))
        ctx.save_for_backward(x2 if need_x else None, h, weight, v, core, u)
        ctx.x_shape, ctx.scale = x.shape, scale
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x2, h, weight, v, core, u = ctx.saved_tensors
        s = ctx.scale
        g = grad.reshape(-1, grad.shape[-1]).to(h.dtype)
        need_x, need_w, need_b, need_v, need_core, need_u = ctx.needs_input_grad[:6]
        gx = gw = gb = gv = gcore = gu = None
        d = v if core is None else v @ core.t()
        gq = _rank_major(g, u) if need_x or need_v or need_core else None  # g U: [N, r1], unscaled
        if need_x:
            gx = (g @ weight).addmm_(gq, d.t(), alpha=s).view(ctx.x_shape)
        if need_w:  # only when someone trains W0 through this layer as well
            gw = g.t() @ x2
        if need_b:
            gb = g.sum(0)
        if need_v or need_core:
            gd = _rank_major(x2.t(), gq).mul_(s)  # dL/dD, [d_in, r1]
            if core is None:
                gv = gd
            else:
                gv = gd @ core if need_v else None
                gcore = gd.t() @ v if need_core else None
        if need_u:
            gu = _rank_major(g.t(), h).mul_(s)
        grads = (gx, gw, gb, gv, gcore, gu)
        return (*(None if t is None else t.to(dt) for t, dt in zip(grads, ctx.dtypes)), None)


def low_rank_linear(x: Tensor, weight: Tensor, bias: Tensor | None, factor_in: Tensor, factor_out: Tensor,
                    core: Tensor | None = None, scale: float = 1.0) -> Tensor:
    """``x W0^T + b + s x V G^T U^T`` with ``weight = W0 [d_out, d_in]``, ``factor_in = V [d_in, r2]``,
    ``core = G [r1, r2]`` (optional; without it ``r1 = r2``) and ``factor_out = U [d_out, r1]`` (see the module
    docstring). Exact; differentiable in every tensor operand."""
    return _LowRankLinear.apply(x, weight, bias, factor_in, core, factor_out, float(scale))

"""FLoRA: low-rank *Tucker* adaptation that keeps the shape of the weight tensor.

For a frozen weight ``W0`` of order N (``nn.Linear``: ``[d_out, d_in]``; ``nn.ConvNd``:
``[d_out, d_in/groups, k_1, ..., k_n]``) the update is

    dW = s * G x_1 U x_2 V x_3 K_1 ... x_N K_n

with a ``core`` ``G`` of the same order as ``W0`` and shape ``[r_1, ..., r_N]`` and one factor per mode, named by
role (the package's one notation, shared with LoRA and :mod:`~flora_mm.adapters.functional`): ``factor_out``
``U [d_out, r_1]``, ``factor_in`` ``V [d_in/groups, r_2]`` and the ``kernel`` factors ``K_i [k_i, r]`` (``x_n`` is
the mode-n product). Ranks: ``r_1 = min(rank, d_out)``, ``r_2 = min(rank, d_in/groups)``, kernel modes
``r = min(kernel_rank, k_i)``. For a Linear layer this is ``dW = s * U G V^T`` (LoRA is the special case
``G = I``). Initialisation: ``G = 0`` and random factors, so the adapted layer equals the base layer at step 0.
Parameter count: ``prod(r_n) + sum(I_n * r_n)``.

State-dict keys (:attr:`FLoRALayer.ROLE_KEYS`): ``flora_core`` (G), ``flora_factor_0`` (U), ``flora_factor_1``
(V), ``flora_factor_{2..}`` (K_1, K_2...).

Options (:class:`~flora_mm.adapters.methods.FLoRAOptions`): LoRA's and ``kernel_rank``; ``dora=True`` puts DoRA's
magnitude over the Tucker-updated weight (FLoRA + DoRA); ``mpc`` constrains ``U`` (output side) against ``V`` and
the kernel factors (input side), see :mod:`~flora_mm.adapters.lowrank`.

Routes (see :mod:`flora_mm.adapters.base`): ``branch`` for Linear is ``x W0^T + b + s x (V G^T) U^T`` (two thin
matmuls accumulated into the base GEMM by :func:`~flora_mm.adapters.functional.low_rank_linear`); for
a dense convolution (``groups == 1``) it is ``1x1 conv (V^T) -> core conv (G x_3 K_1 x_4 K_2, with the layer's
stride / padding / dilation / padding_mode) -> 1x1 conv (s U)``, which equals ``conv(x, dW)`` because a per-pixel
channel map commutes with every padding mode (MPC_n: the activation after the core convolution). Grouped /
depthwise convolutions use ``merged``.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import conv_nd
from .config import AdapterConfig
from .functional import low_rank_linear
from .lowrank import LowRankLayer, init_factor
from .methods import FLoRAOptions, Method, register_method

__all__ = ['tucker_product', 'tucker_merged', 'FLoRALayer', 'FLoRALinear', 'FLoRAConv1d', 'FLoRAConv2d', 'FLoRAConv3d',
           'FLORA']


def tucker_product(core: Tensor, factors: Sequence[Tensor], modes: Sequence[int] | None = None) -> Tensor:
    """``core x_n factors[n]`` over the given modes (default all), applied smallest output size first.

    ``factors[n]`` has shape ``[I_n, core.shape[n]]``; the result has ``I_n`` in every transformed mode.
    """
    modes = range(len(factors)) if modes is None else modes
    out = core
    for n in sorted(modes, key=lambda m: factors[m].shape[0]):
        # matmul (not tensordot) so that autocast applies to every step; the first and last modes need no movedim
        # (fewer autograd nodes: this runs every training step for every merged layer)
        factor = factors[n]
        if n == 0:
            out = torch.matmul(factor, out.reshape(out.shape[0], -1)).view(factor.shape[0], *out.shape[1:])
        elif n == out.dim() - 1:
            out = torch.matmul(out, factor.t())
        else:
            out = torch.movedim(torch.matmul(torch.movedim(out, n, -1), factor.t()), -1, n)
    return out


def tucker_merged(weight: Tensor, core: Tensor, factors: Sequence[Tensor], scale: float = 1.0) -> Tensor:
    """``weight + scale * tucker_product(core, factors)`` in a few small kernels, for the ``merged`` route.

    ``factors = [U, V, K_1, ...]`` (factor_out, factor_in, kernel factors). With ``S = K_1 kron ... kron K_n``
    (``[prod k_i, prod r_i]``, tiny), the core's kernel modes are contracted at once, ``T = G_(12) S^T``
    (``[r_1 r_2, prod k_i]``), then the input mode, ``M[a] = V T[a]`` (``[r_1, I_2, prod k_i]``), and the output
    mode is one ``addmm`` on the mode-0 unfolding: ``W_(0) = W0_(0) + s U M_(0)``. Linear: ``W0 + s U (G V^T)``.
    Every intermediate is at most ``r_1 x`` the size of one output channel's kernel.
    """
    r1, r2 = core.shape[:2]
    if len(factors) == 2:
        inner = core @ factors[1].t()
    else:
        spatial = functools.reduce(torch.kron, factors[2:])
        if factors[1].numel() == 1:  # one input channel per group (depthwise): its factor is a scalar
            inner = (core.reshape(r1, -1) * factors[1]) @ spatial.t()
        else:
            inner = core.reshape(r1 * r2, -1) @ spatial.t()
            inner = torch.matmul(factors[1], inner.view(r1, r2, -1)).reshape(r1, -1)
    return torch.addmm(weight.reshape(weight.shape[0], -1), factors[0], inner, alpha=scale).view(weight.shape)


class FLoRALayer(LowRankLayer):
    """Mixin with the FLoRA maths, shared by :class:`FLoRALinear` and :class:`FLoRAConv1d/2d/3d`."""

    ranks: tuple[int, ...]
    #: role -> state-dict key (the keys never change; the roles are how code and docs name the tensors)
    # (the kernel factors are flora_factor_2, flora_factor_3...: kernel_factors)
    ROLE_KEYS = {'core': 'flora_core', 'factor_out': 'flora_factor_0', 'factor_in': 'flora_factor_1'}

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        shape = tuple(self.weight.shape)
        ranks = (min(cfg.rank, shape[0]), min(cfg.rank, shape[1]), *(min(cfg.kernel_rank, k) for k in shape[2:]))
        self.ranks = ranks
        self.register_parameter('flora_core', self._new_param(*ranks))
        for n, (size, rank) in enumerate(zip(shape, ranks)):
            self.register_parameter(f'flora_factor_{n}', self._new_param(size, rank))
        self.adapter_names = ('flora_core', *(f'flora_factor_{n}' for n in range(len(shape))))
        self._init_low_rank(cfg)
        self.reset_adapter_parameters(cfg.init)

    @torch.no_grad()
    def reset_adapter_parameters(self, init: str = 'kaiming') -> None:
        """Core to zero; factors ``kaiming`` (``kaiming_normal_(a=sqrt(3))``, as the authors' reference code:
        entries ~ N(0, 1 / (2 r_n))), ``gaussian`` (N(0, 1)) or ``orthogonal`` (orthonormal columns)."""
        self.flora_core.zero_()
        for factor in self.factors:
            init_factor(factor, init)

    @property
    def factors(self) -> list[Tensor]:
        """All factors in mode order: ``[factor_out, factor_in, *kernel_factors]``."""
        return [getattr(self, f'flora_factor_{n}') for n in range(len(self.ranks))]  # FSDP: views, see base

    @property
    def kernel_factors(self) -> list[Tensor]:
        return self.factors[2:]

    @property
    def output_rank(self) -> int:
        return self.ranks[0]

    def update(self) -> Tensor:
        return tucker_product(self.flora_core * self.scale, self.factors)  # scale the small core, not dW

    def _direction(self) -> Tensor:
        # runs for every merged layer at every training step on tiny tensors, where the number of kernels (and
        # autograd nodes) rather than their size sets the cost: see tucker_merged
        return tucker_merged(self.weight, self.flora_core, self.factors, self.scale)

    def _supports_branch(self) -> bool:
        return getattr(self, 'groups', 1) == 1

    def _branch_rank(self) -> int:
        return max(self.ranks[:2])

    def _branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        factors = self.factors
        u, v, core = factors[0], factors[1], self.flora_core
        if len(self.ranks) == 2:  # Linear: x W0^T + b + s x (V G^T) U^T
            if not self.dropout and self._act is None:
                return low_rank_linear(x, self.weight, bias, v, u, core, self.scale)
            h = self._drop(x) @ (v @ core.t())
            h = h if self._act is None else self._act(h)
            return self._op(x, self.weight, bias) + h @ (u * self.scale).t()
        out = self._op(x, self.weight, bias)
        x = self._drop(x)
        ones = (1, ) * (len(self.ranks) - 2)
        conv = conv_nd(len(ones))
        kernel = tucker_product(core, factors, modes=range(2, len(self.ranks)))  # G x_3 K_1 x_4 K_2 ...
        h = conv(x, v.t().reshape(self.ranks[1], -1, *ones))
        h = self._op(h, kernel, None)
        h = h if self._act is None else self._act(h)
        return out + conv(h, (u * self.scale).reshape(*u.shape, *ones))


class FLoRALinear(FLoRALayer, nn.Linear):
    """``nn.Linear`` with a FLoRA update ``dW = s U G V^T``."""
    _op = staticmethod(F.linear)


class FLoRAConv1d(FLoRALayer, nn.Conv1d):
    """``nn.Conv1d`` with a FLoRA (Tucker) update, core ``[r, r, r3]``."""
    _op = nn.Conv1d._conv_forward


class FLoRAConv2d(FLoRALayer, nn.Conv2d):
    """``nn.Conv2d`` with a FLoRA (Tucker) update, core ``[r, r, r3, r3]``."""
    _op = nn.Conv2d._conv_forward


class FLoRAConv3d(FLoRALayer, nn.Conv3d):
    """``nn.Conv3d`` with a FLoRA (Tucker) update, core ``[r, r, r3, r3, r3]``."""
    _op = nn.Conv3d._conv_forward


FLORA = register_method(Method(
    'FLoRA', options=FLoRAOptions,
    layers={nn.Linear: FLoRALinear, nn.Conv1d: FLoRAConv1d, nn.Conv2d: FLoRAConv2d, nn.Conv3d: FLoRAConv3d},
    formula='`dW = s G x_1 U x_2 V x_3 K_1 ...` (Tucker, AGB); Linear `s U G V^T`',
    params='`prod(r_n) + sum(I_n r_n)`; Linear `r^2 + r (d_in + d_out)`; Conv2d `r^2 r3^2 + r (d_out + d_in / g) + 2 k r3`',
    mergeable="yes, exactly (not with `mpc='nonlinear'`)",
    source='Si et al., FLoRA; subspace-tuning paper eq. 12 (AGB)'))

"""LoRA, DoRA and TriLoRA: the matrix forms of the LoRA family (``AB``, ``AB`` + magnitude, ``ADB``).

LoRA (Hu et al. 2021), ``nn.Linear`` ``[d_out, d_in]``: ``dW = s * B A`` with ``A: [r, d_in]`` (Kaiming-uniform,
``a = sqrt(5)``) and ``B: [d_out, r]`` (zeros). Parameters: ``r * (d_in + d_out)``. In the package's role
notation (``dW = s U G V^T``, :mod:`~flora_mm.adapters.lowrank`) ``B`` is ``factor_out`` ``U`` and ``A`` is
``factor_in`` ``V`` stored transposed (``A = V^T``), with no core (``G = I``): :attr:`LoRALayer.ROLE_KEYS`. The keys
keep loralib's and PEFT's names.

LoRA on ``nn.ConvNd`` follows loralib's ``ConvLoRA`` (the FLoRA paper's baseline): the weight
``[d_out, d_in/g, k_1, ..., k_n]`` is viewed (row-major) as a ``(d_out/g * k_1) x (d_in * k_2 ... k_n)`` matrix and
``dW = s * reshape(B A)`` with ``A: [r k_1, d_in k_2...k_n]`` and ``B: [d_out/g k_1, r k_1]``; for Conv2d with a
``k x k`` kernel that is exactly loralib's ``A: [r k, d_in k]``, ``B: [d_out/g k, r k]``, i.e. rank ``r k``.
Parameters (Conv2d): ``r k^2 (d_in + d_out/g)``.

DoRA (Liu et al. 2024) is LoRA with the magnitude / direction split (``dora=True``, which any factorised method
takes, see :class:`~flora_mm.adapters.base.AdapterLayer`): ``W[o] = m[o] (W0 + dW)[o] / ||(W0 + dW)[o]||`` with ``m``
initialised to ``||W0[o]||`` and the norm a constant in backward (DoRA paper Sec. 4.3, as PEFT). Parameters: LoRA's
plus ``d_out``.

TriLoRA (Feng et al. 2024; AdaLoRA's SVD form ``P diag(lambda) Q`` without its rank re-allocation -- not built
here): the diagonal-core form ``ADB`` of the subspace-tuning paper (eq. 12), ``dW = s * U diag(d) V^T`` on the same
matrix as LoRA (loralib's reshape for convolutions, rank ``r k_1``), with ``d = 0`` and both factors random as
FLoRA's (Kaiming normal ``a = sqrt(3)``, ``gaussian`` or ``orthogonal``), so that LoRA (``G = I``), TriLoRA (``G``
diagonal) and FLoRA (``G`` arbitrary) differ only in the core. Parameters: LoRA's plus the rank.

State-dict keys: ``lora_A``, ``lora_B``, ``dora_magnitude``; ``trilora_A`` (``V^T``), ``trilora_B`` (``U``),
``trilora_d``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import AdapterConfig
from .functional import low_rank_linear
from .lowrank import LowRankLayer, init_factor
from .methods import FLoRAOptions, LowRankOptions, Method, register_method

__all__ = ['LoRALayer', 'LoRALinear', 'LoRAConv1d', 'LoRAConv2d', 'LoRAConv3d', 'DoRALinear', 'DoRAConv1d',
           'DoRAConv2d', 'DoRAConv3d', 'TriLoRALayer', 'TriLoRALinear', 'TriLoRAConv1d', 'TriLoRAConv2d',
           'TriLoRAConv3d', 'TriLoRAOptions', 'lora_matrix_shape', 'LORA', 'DORA', 'TRILORA']


def lora_matrix_shape(weight_shape: tuple[int, ...], groups: int = 1) -> tuple[int, int, int]:
    """``(rows, cols, rank_multiplier)`` of the matrix LoRA factorises for a weight of this shape.

    Linear: ``(d_out, d_in, 1)``. ConvNd (loralib's ConvLoRA): ``(d_out/g * k_1, d_in * k_2...k_n, k_1)``.
    """
    if len(weight_shape) == 2:
        return weight_shape[0], weight_shape[1], 1
    k1 = weight_shape[2]
    rows = weight_shape[0] // groups * k1
    return rows, math.prod(weight_shape) // rows, k1


class LoRALayer(LowRankLayer):
    """Mixin with the LoRA maths, shared by :class:`LoRALinear` and :class:`LoRAConv1d/2d/3d` (and DoRA's)."""

    rank: int
    #: role -> state-dict key (loralib / PEFT names; ``lora_A`` holds ``factor_in`` transposed)
    ROLE_KEYS = {'factor_out': 'lora_B', 'factor_in': 'lora_A'}
    TRANSPOSED_ROLES = frozenset({'factor_in'})

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        rows, cols, mult = lora_matrix_shape(tuple(self.weight.shape), getattr(self, 'groups', 1))
        self.rank = cfg.rank * mult
        self.register_parameter('lora_A', self._new_param(self.rank, cols))
        self.register_parameter('lora_B', self._new_param(rows, self.rank))
        self.adapter_names = ('lora_A', 'lora_B')
        self._init_low_rank(cfg)
        self.reset_adapter_parameters(cfg.init)

    @property
    def output_rank(self) -> int:
        return self.rank

    @torch.no_grad()
    def reset_adapter_parameters(self, init: str = 'kaiming') -> None:
        """``B = 0``; ``A`` Kaiming-uniform (``a = sqrt(5)``, as loralib / PEFT) or ``gaussian`` (std ``1/r``)."""
        if init == 'kaiming':
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            nn.init.normal_(self.lora_A, std=1.0 / self.rank)
        self.lora_B.zero_()

    def update(self) -> Tensor:
        """``s * reshape(B A)``, the LoRA update in the weight's shape."""
        return ((self.lora_B * self.scale) @ self.lora_A).view(self.weight.shape)  # scale a factor, not dW

    def _direction(self) -> Tensor:
        """``W0 + s reshape(B A)`` in one ``addmm`` (no separate scale, product and sum)."""
        weight = self.weight.reshape(self.lora_B.shape[0], -1)
        return torch.addmm(weight, self.lora_B, self.lora_A, alpha=self.scale).view(self.weight.shape)

    def _supports_branch(self) -> bool:
        return self.weight.dim() == 2  # loralib's reshape of a conv kernel has no factorised convolution form

    def _branch_rank(self) -> int:
        return self.rank

    def _branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x W0^T + bias + s (x A^T) B^T``, fused into the base GEMM unless adapter dropout applies to ``x``
        (MPC_n: ``s h(x A^T) B^T``)."""
        if self._act is not None:
            return self._op(x, self.weight, bias) + F.linear(self._act(F.linear(self._drop(x), self.lora_A)),
                                                            self.lora_B * self.scale)
        if self.dropout:
            return self._op(x, self.weight, bias) + F.linear(F.linear(self._drop(x), self.lora_A),
                                                            self.lora_B * self.scale)
        return low_rank_linear(x, self.weight, bias, self.factor_in, self.factor_out, scale=self.scale)


class LoRALinear(LoRALayer, nn.Linear):
    """``nn.Linear`` with a LoRA update."""
    _op = staticmethod(F.linear)


class LoRAConv1d(LoRALayer, nn.Conv1d):
    """``nn.Conv1d`` with a LoRA update (loralib's ConvLoRA form)."""
    _op = nn.Conv1d._conv_forward


class LoRAConv2d(LoRALayer, nn.Conv2d):
    """``nn.Conv2d`` with a LoRA update (loralib's ConvLoRA form, rank ``r k``)."""
    _op = nn.Conv2d._conv_forward


class LoRAConv3d(LoRALayer, nn.Conv3d):
    """``nn.Conv3d`` with a LoRA update (loralib's ConvLoRA form)."""
    _op = nn.Conv3d._conv_forward


class DoRALinear(LoRALinear):
    """``nn.Linear`` with a DoRA update (LoRA with the magnitude / direction split)."""


class DoRAConv1d(LoRAConv1d):
    """``nn.Conv1d`` with a DoRA update."""


class DoRAConv2d(LoRAConv2d):
    """``nn.Conv2d`` with a DoRA update."""


class DoRAConv3d(LoRAConv3d):
    """``nn.Conv3d`` with a DoRA update."""


@dataclasses.dataclass(frozen=True)
class TriLoRAOptions(LowRankOptions):
    """LoRA's options with FLoRA's factor initialisations."""
    INITS = FLoRAOptions.INITS


class TriLoRALayer(LoRALayer):
    """Mixin with the diagonal-core maths ``dW = s U diag(d) V^T`` on LoRA's matrix."""

    ROLE_KEYS = {'factor_out': 'trilora_B', 'factor_in': 'trilora_A'}

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        rows, cols, mult = lora_matrix_shape(tuple(self.weight.shape), getattr(self, 'groups', 1))
        self.rank = cfg.rank * mult
        self.register_parameter('trilora_A', self._new_param(self.rank, cols))
        self.register_parameter('trilora_B', self._new_param(rows, self.rank))
        self.register_parameter('trilora_d', self._new_param(self.rank))
        self.adapter_names = ('trilora_A', 'trilora_B', 'trilora_d')
        self._init_low_rank(cfg)
        self.reset_adapter_parameters(cfg.init)

    @property
    def core(self) -> Tensor:
        """``G = diag(d)``."""
        return torch.diag(self.trilora_d)

    @torch.no_grad()
    def reset_adapter_parameters(self, init: str = 'kaiming') -> None:
        """``d = 0``; both factors as FLoRA's: ``kaiming`` (N(0, 1 / (2 r))), ``gaussian`` (N(0, 1)) or
        ``orthogonal`` (orthonormal columns of ``U`` and ``V``)."""
        self.trilora_d.zero_()
        for factor in (self.factor_out, self.factor_in):  # V is a transposed view of trilora_A: in place is fine
            init_factor(factor, init)

    def update(self) -> Tensor:
        return ((self.trilora_B * (self.trilora_d * self.scale)) @ self.trilora_A).view(self.weight.shape)

    def _direction(self) -> Tensor:
        weight = self.weight.reshape(self.trilora_B.shape[0], -1)
        return torch.addmm(weight, self.trilora_B * self.trilora_d, self.trilora_A,
                           alpha=self.scale).view(self.weight.shape)

    def _branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x W0^T + bias + s (x V diag(d)) U^T`` (MPC_n: ``s h(x V diag(d)) U^T``)."""
        if self._act is None and not self.dropout:
            return low_rank_linear(x, self.weight, bias, self.factor_in, self.factor_out, self.core, self.scale)
        h = F.linear(self._drop(x), self.trilora_A) * self.trilora_d
        h = h if self._act is None else self._act(h)
        return self._op(x, self.weight, bias) + F.linear(h, self.trilora_B * self.scale)


class TriLoRALinear(TriLoRALayer, nn.Linear):
    """``nn.Linear`` with a TriLoRA (diagonal-core) update."""
    _op = staticmethod(F.linear)


class TriLoRAConv1d(TriLoRALayer, nn.Conv1d):
    """``nn.Conv1d`` with a TriLoRA update on loralib's matrix."""
    _op = nn.Conv1d._conv_forward


class TriLoRAConv2d(TriLoRALayer, nn.Conv2d):
    """``nn.Conv2d`` with a TriLoRA update on loralib's matrix (rank ``r k``)."""
    _op = nn.Conv2d._conv_forward


class TriLoRAConv3d(TriLoRALayer, nn.Conv3d):
    """``nn.Conv3d`` with a TriLoRA update on loralib's matrix."""
    _op = nn.Conv3d._conv_forward


def _layers(linear, conv1d, conv2d, conv3d) -> dict[type, type]:
    return {nn.Linear: linear, nn.Conv1d: conv1d, nn.Conv2d: conv2d, nn.Conv3d: conv3d}


_LOW_RANK_MERGE = "yes, exactly (not with `mpc='nonlinear'`)"
LORA = register_method(Method(
    'LoRA', options=LowRankOptions, layers=_layers(LoRALinear, LoRAConv1d, LoRAConv2d, LoRAConv3d),
    formula='`dW = s B A` (AB); convolutions: loralib ConvLoRA reshape, rank `r k`',
    params='`r (d_in + d_out)`; Conv2d `r k^2 (d_in + d_out / g)`', mergeable=_LOW_RANK_MERGE,
    source='Hu et al. 2021; subspace-tuning paper eq. 12 (AB)',
    lr_mult=0.25))  # chosen on validation curves of three tasks (flora_mm.engine.defaults; docs/tuned_comparison.md)
DORA = register_method(Method(
    'DoRA', options=LowRankOptions, layers=_layers(DoRALinear, DoRAConv1d, DoRAConv2d, DoRAConv3d),
    fixed=dict(dora=True), formula='`W = m (W0 + s B A) / ‖W0 + s B A‖` per output channel',
    params="LoRA's `+ d_out`", mergeable='yes, exactly', source='Liu et al. 2024'))
TRILORA = register_method(Method(
    'TriLoRA', options=TriLoRAOptions, layers=_layers(TriLoRALinear, TriLoRAConv1d, TriLoRAConv2d, TriLoRAConv3d),
    formula="`dW = s U diag(d) V^T` (ADB); convolutions: LoRA's reshape", params="LoRA's `+ r` (conv: `+ r k`)",
    mergeable=_LOW_RANK_MERGE, source='Feng et al. 2024; subspace-tuning paper eq. 12 (ADB)'))

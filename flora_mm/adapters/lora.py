"""LoRA and DoRA baselines, in the forms the FLoRA paper compared against.

LoRA (Hu et al. 2021), ``nn.Linear`` ``[d_out, d_in]``: ``dW = s * B A`` with ``A: [r, d_in]`` (Kaiming-uniform,
``a = sqrt(5)``) and ``B: [d_out, r]`` (zeros). Parameters: ``r * (d_in + d_out)``. In the package's role
notation (shared with FLoRA's ``dW = s U G V^T``) ``B`` is ``factor_out`` ``U`` and ``A`` is ``factor_in`` ``V``
stored transposed (``A = V^T``), with no core (``G = I``): :attr:`LoRALayer.ROLE_KEYS`. The keys keep loralib's
and PEFT's names.

LoRA on ``nn.ConvNd`` follows loralib's ``ConvLoRA`` (the paper's baseline): the weight
``[d_out, d_in/g, k_1, ..., k_n]`` is viewed (row-major) as a ``(d_out/g * k_1) x (d_in * k_2 ... k_n)`` matrix and
``dW = s * reshape(B A)`` with ``A: [r k_1, d_in k_2...k_n]`` and ``B: [d_out/g k_1, r k_1]``; for Conv2d with a
``k x k`` kernel that is exactly loralib's ``A: [r k, d_in k]``, ``B: [d_out/g k, r k]``, i.e. rank ``r k``.
Parameters (Conv2d): ``r k^2 (d_in + d_out/g)``.

DoRA (Liu et al. 2024) on top of the same LoRA update, per output channel ``o``:
``W[o] = m[o] * (W0 + dW)[o] / ||(W0 + dW)[o]||`` with the magnitude ``m`` initialised to ``||W0[o]||`` (so the
layer equals the base layer at init). As in the DoRA paper (Sec. 4.3) and PEFT, the norm is treated as a constant
in back-propagation (detached), which saves the memory of its graph. Routes as LoRA's: ``merged`` builds ``W``;
Linear layers wide enough for ``auto`` take the ``branch`` ``(x W0^T + s x A^T B^T) * m / ||W0 + s B A|| + b``,
which skips the weight gradient (the norm comes from one ``addmm`` outside autograd). Parameters: LoRA's plus
``d_out``.

State-dict keys: ``lora_A``, ``lora_B`` and, for DoRA, ``dora_magnitude``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import AdapterLayer, adapted_classes
from .config import AdapterConfig
from .functional import low_rank_linear
from .methods import LOW_RANK_OPTIONS, Method, register_method

__all__ = ['LoRALayer', 'LoRALinear', 'LoRAConv1d', 'LoRAConv2d', 'LoRAConv3d', 'DoRALayer', 'DoRALinear',
           'DoRAConv1d', 'DoRAConv2d', 'DoRAConv3d', 'lora_matrix_shape']


def lora_matrix_shape(weight_shape: tuple[int, ...], groups: int = 1) -> tuple[int, int, int]:
    """``(rows, cols, rank_multiplier)`` of the matrix LoRA factorises for a weight of this shape.

    Linear: ``(d_out, d_in, 1)``. ConvNd (loralib's ConvLoRA): ``(d_out/g * k_1, d_in * k_2...k_n, k_1)``.
    """
    if len(weight_shape) == 2:
        return weight_shape[0], weight_shape[1], 1
    k1 = weight_shape[2]
    rows = weight_shape[0] // groups * k1
    return rows, math.prod(weight_shape) // rows, k1


class LoRALayer(AdapterLayer):
    """Mixin with the LoRA maths, shared by :class:`LoRALinear` and :class:`LoRAConv1d/2d/3d`."""

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

    def lora_delta(self) -> Tensor:
        """``s * reshape(B A)``, the LoRA update in the weight's shape."""
        return ((self.lora_B * self.scale) @ self.lora_A).view(self.weight.shape)  # scale a factor, not dW

    def delta_weight(self) -> Tensor:
        return self.lora_delta()

    def merged_weight(self) -> Tensor:
        """``W0 + s reshape(B A)`` in one ``addmm`` (no separate scale, product and sum)."""
        weight = self.weight.reshape(self.lora_B.shape[0], -1)
        return torch.addmm(weight, self.lora_B, self.lora_A, alpha=self.scale).view(self.weight.shape)

    def _supports_branch(self) -> bool:
        return self.weight.dim() == 2  # loralib's reshape of a conv kernel has no factorised convolution form

    def _branch_rank(self) -> int:
        return self.rank

    def _lora_branch(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(self._drop(x), self.lora_A), self.lora_B * self.scale)

    def _base_plus_branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``x W0^T + bias + s (x A^T) B^T``, fused into the base GEMM unless adapter dropout applies to ``x``."""
        if self.dropout:
            return self._op(x, self.weight, bias) + self._lora_branch(x)
        return low_rank_linear(x, self.weight, bias, self.factor_in, self.factor_out, scale=self.scale)

    def _branch_forward(self, x: Tensor) -> Tensor:
        return self._base_plus_branch(x, self.bias)


class DoRALayer(LoRALayer):
    """Mixin with the DoRA maths (magnitude ``m`` times the normalised LoRA-updated direction)."""

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        super()._init_adapter(cfg)
        self.register_parameter('dora_magnitude', self._new_param(self.weight.shape[0]))
        self.adapter_names = (*self.adapter_names, 'dora_magnitude')
        with torch.no_grad():
            self.dora_magnitude.copy_(self._row_norm(self.weight))

    def reset_adapter_parameters(self, init: str = 'kaiming') -> None:
        super().reset_adapter_parameters(init)
        if 'dora_magnitude' in self._parameters:
            with torch.no_grad():
                self.dora_magnitude.copy_(self._row_norm(self.weight))

    @torch.no_grad()
    def _base_weight_loaded(self, weight: Tensor) -> None:
        """``m = ||W0||`` per output channel for the newly loaded ``W0``, as at initialisation."""
        self.dora_magnitude.copy_(self._row_norm(weight.to(self.dora_magnitude)))

    @staticmethod
    def _row_norm(weight: Tensor) -> Tensor:
        return torch.linalg.vector_norm(weight.flatten(1), dim=1)

    def _channel_scale(self, direction: Tensor | None = None) -> Tensor:
        """``m / ||W0 + dW||`` per output channel (the norm a constant), shaped to broadcast against the weight.
        Without ``direction`` (``W0 + dW``), the norm is taken of one ``addmm`` outside autograd, so the routes that
        never build ``W`` keep no weight-sized tensor for backward."""
        if direction is None:
            with torch.no_grad():
                direction = super().merged_weight()
        scale = self.dora_magnitude / self._row_norm(direction.detach())
        return scale.view(-1, *(1, ) * (self.weight.dim() - 1))

    def merged_weight(self) -> Tensor:
        direction = super().merged_weight()
        return self._channel_scale(direction) * direction

    def delta_weight(self) -> Tensor:
        return self.merged_weight() - self.weight

    def _output_scale(self, x_dim: int) -> Tensor:
        scale = self._channel_scale().flatten()
        # Linear output: [..., d_out]; ConvNd output: [N, d_out, *spatial].
        return scale if self.weight.dim() == 2 else scale.view(-1, *(1, ) * (x_dim - 2))

    def _branch_forward(self, x: Tensor) -> Tensor:
        """``(x W0^T + s x A^T B^T) * m / ||W0 + s B A|| + b``: LoRA's fused branch, then the channel scale. Unlike
        ``merged`` it needs no weight gradient and keeps only the layer's output (for ``m``'s gradient)."""
        out = self._base_plus_branch(x, None)
        return self._add_bias(out * self._output_scale(x.dim()).to(out.dtype))

    def _two_pass_forward(self, x: Tensor) -> Tensor:
        out = self._op(x, self.weight, None) + self._op(self._drop(x), self.lora_delta(), None)
        return self._add_bias(out * self._output_scale(x.dim()).to(out.dtype))

    def _add_bias(self, out: Tensor) -> Tensor:
        if self.bias is None:
            return out
        bias = self.bias.to(out.dtype)  # keep autocast's dtype
        return out + (bias if self.weight.dim() == 2 else bias.view(-1, *(1, ) * (out.dim() - 2)))


# convolutions take loralib's ConvLoRA form (Conv2d: rank r * k), see the module docstring
LORA_LAYERS = adapted_classes(LoRALayer, 'LoRA', __name__, 'a LoRA update (loralib\'s ConvLoRA form for convolutions)')
LoRALinear, LoRAConv1d, LoRAConv2d, LoRAConv3d = LORA_LAYERS.values()
DORA_LAYERS = adapted_classes(DoRALayer, 'DoRA', __name__, 'a DoRA update')
DoRALinear, DoRAConv1d, DoRAConv2d, DoRAConv3d = DORA_LAYERS.values()

LORA = register_method(Method('LoRA', options=LOW_RANK_OPTIONS, inits=('kaiming', 'gaussian'), layers=LORA_LAYERS))
DORA = register_method(Method('DoRA', options=LOW_RANK_OPTIONS, inits=('kaiming', 'gaussian'), layers=DORA_LAYERS))

"""Scaling the singular subspaces (mode-2 reconstruction of the subspace-tuning paper, Si et al., Sec. 3.2.2, eq. 7):
(IA)^3, SSL and SSB -- learnable vectors that rescale a frozen weight's output and / or input channels.

The paper writes a layer as ``x W`` with ``W [n, m]`` (``n`` inputs, ``m`` outputs) and defines (IA)^3 as
``W D_2``, SSL as ``D_1 W`` and SSB as ``D_1 W D_2`` (``D_1 [n, n]``, ``D_2 [m, m]`` diagonal). In PyTorch's
``[out, in]`` layout (``y = x W^T``):

* ``IA3``: ``W = diag(l) W0`` -- one factor per *output* channel (``l [d_out]``, key ``ia3_l``), as (IA)^3 rescales
  a layer's output activations (Liu et al. 2022). The bias is not scaled (PEFT's (IA)^3 scales it too for
  non-feed-forward layers; the paper's ``W D_2`` does not);
* ``SSL``: ``W = W0 diag(d)`` -- one factor per *input* channel (``d [d_in]``, key ``ssl_d``);
* ``SSB``: ``W = diag(l) W0 diag(d)`` -- both (``ssb_l [d_out]``, ``ssb_d [d_in]``).

Every vector starts at 1, so the adapted layer equals the base layer at step 0. For a convolution the output
factor scales every kernel of an output channel, ``W[o] = l[o] W0[o]``. The input factor has one entry per input
channel of the *layer* (``d_in``, not ``d_in / groups``): a grouped weight ``[d_out, d_in/g, k...]`` holds, at
``W[o, j]``, the kernel from input channel ``c = g(o) d_in/g + j`` (``g(o)`` the group of output channel ``o``), so
``W[o, j] = W0[o, j] d[c]`` -- exactly ``conv(x * d, W0)`` with ``d`` scaling the input's channels. For a
depthwise convolution (``d_in = groups``) input and output channel coincide, so SSL equals (IA)^3 there and SSB
scales each depthwise kernel by ``l[o] d[o]``.

Parameters: (IA)^3 ``d_out``, SSL ``d_in``, SSB ``d_in + d_out`` per layer. Exactly mergeable. Routes: ``merged``
(build ``W``), ``two_pass`` and ``branch``: ``op(x * d, W0) * l + b`` (no weight gradient, only elementwise
products; the default under the ``cost_model`` policy).
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .base import AdapterLayer
from .config import AdapterConfig
from .methods import Method, register_method

__all__ = ['ScalingLayer', 'IA3Layer', 'SSLLayer', 'SSBLayer', 'IA3Linear', 'IA3Conv1d', 'IA3Conv2d', 'IA3Conv3d', 'SSLLinear', 'SSLConv1d', 'SSLConv2d',
           'SSLConv3d', 'SSBLinear', 'SSBConv1d', 'SSBConv2d', 'SSBConv3d', 'IA3', 'SSL', 'SSB']


class ScalingLayer(AdapterLayer):
    """Mixin of the scaling methods: ``W = diag(l) W0 diag(d)`` with the output factor ``l`` if
    :attr:`OUT_KEY` and the input factor ``d`` if :attr:`IN_KEY` (module docstring)."""

    #: state-dict key of the output-channel factor ``l`` (None: not scaled)
    OUT_KEY: str | None = None
    #: state-dict key of the input-channel factor ``d`` (None: not scaled)
    IN_KEY: str | None = None

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        names = []
        if self.OUT_KEY:
            self.register_parameter(self.OUT_KEY, self._new_param(self.weight.shape[0], fill=1.0))
            names.append(self.OUT_KEY)
        if self.IN_KEY:
            self.register_parameter(self.IN_KEY, self._new_param(self._in_channels(), fill=1.0))
            names.append(self.IN_KEY)
        self.adapter_names = tuple(names)

    def _in_channels(self) -> int:
        return self.weight.shape[1] * getattr(self, 'groups', 1)

    def _weight_in_factor(self) -> Tensor:
        """``d`` laid out like the weight's first two modes: ``[d_out, d_in / groups]`` (see the module docstring)."""
        d = getattr(self, self.IN_KEY)
        d_out, per_group = self.weight.shape[:2]
        groups = getattr(self, 'groups', 1)
        return d.view(groups, 1, per_group).expand(groups, d_out // groups, per_group).reshape(d_out, per_group)

    def _trailing(self) -> tuple[int, ...]:
        return (1, ) * (self.weight.dim() - 2)

    def _direction(self) -> Tensor:
        weight = self.weight
        if self.IN_KEY:
            weight = weight * self._weight_in_factor().view(*weight.shape[:2], *self._trailing())
        if self.OUT_KEY:
            weight = weight * getattr(self, self.OUT_KEY).view(-1, 1, *self._trailing())
        return weight

    def update(self) -> Tensor:
        return self._direction() - self.weight

    def _supports_branch(self) -> bool:
        return True

    def _prefer_branch(self, device_type: str) -> bool:
        return True  # elementwise products instead of the weight gradient of op, on any device

    def _branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        if self.IN_KEY:
            x = x * self._per_channel(getattr(self, self.IN_KEY).to(x.dtype), x.dim())
        out = self._op(x, self.weight, None)
        if self.OUT_KEY:
            out = out * self._per_channel(getattr(self, self.OUT_KEY).to(out.dtype), out.dim())
        return self._add_bias(out, bias)


class IA3Layer(ScalingLayer):
    """(IA)^3: ``W = diag(l) W0``."""
    OUT_KEY = 'ia3_l'


class SSLLayer(ScalingLayer):
    """SSL: ``W = W0 diag(d)``."""
    IN_KEY = 'ssl_d'


class SSBLayer(ScalingLayer):
    """SSB: ``W = diag(l) W0 diag(d)``."""
    OUT_KEY, IN_KEY = 'ssb_l', 'ssb_d'


class IA3Linear(IA3Layer, nn.Linear):
    """``nn.Linear`` with (IA)^3: its output channels scaled."""
    _op = staticmethod(F.linear)


class IA3Conv1d(IA3Layer, nn.Conv1d):
    """``nn.Conv1d`` with (IA)^3: its output channels scaled."""
    _op = nn.Conv1d._conv_forward


class IA3Conv2d(IA3Layer, nn.Conv2d):
    """``nn.Conv2d`` with (IA)^3: its output channels scaled."""
    _op = nn.Conv2d._conv_forward


class IA3Conv3d(IA3Layer, nn.Conv3d):
    """``nn.Conv3d`` with (IA)^3: its output channels scaled."""
    _op = nn.Conv3d._conv_forward


class SSLLinear(SSLLayer, nn.Linear):
    """``nn.Linear`` with SSL: its input channels scaled."""
    _op = staticmethod(F.linear)


class SSLConv1d(SSLLayer, nn.Conv1d):
    """``nn.Conv1d`` with SSL: its input channels scaled."""
    _op = nn.Conv1d._conv_forward


class SSLConv2d(SSLLayer, nn.Conv2d):
    """``nn.Conv2d`` with SSL: its input channels scaled."""
    _op = nn.Conv2d._conv_forward


class SSLConv3d(SSLLayer, nn.Conv3d):
    """``nn.Conv3d`` with SSL: its input channels scaled."""
    _op = nn.Conv3d._conv_forward


class SSBLinear(SSBLayer, nn.Linear):
    """``nn.Linear`` with SSB: its output and input channels scaled."""
    _op = staticmethod(F.linear)


class SSBConv1d(SSBLayer, nn.Conv1d):
    """``nn.Conv1d`` with SSB: its output and input channels scaled."""
    _op = nn.Conv1d._conv_forward


class SSBConv2d(SSBLayer, nn.Conv2d):
    """``nn.Conv2d`` with SSB: its output and input channels scaled."""
    _op = nn.Conv2d._conv_forward


class SSBConv3d(SSBLayer, nn.Conv3d):
    """``nn.Conv3d`` with SSB: its output and input channels scaled."""
    _op = nn.Conv3d._conv_forward


IA3 = register_method(Method(
    'IA3', layers={nn.Linear: IA3Linear, nn.Conv1d: IA3Conv1d, nn.Conv2d: IA3Conv2d, nn.Conv3d: IA3Conv3d},
    formula='`W = diag(l) W0` (output channels)', params='`d_out`',
    source='Liu et al. 2022; subspace-tuning paper eq. 7 (W D_2)',
    lr_mult=16.0))  # chosen on validation curves of three tasks (flora_mm.engine.defaults; docs/tuned_comparison.md)
SSL = register_method(Method(
    'SSL', layers={nn.Linear: SSLLinear, nn.Conv1d: SSLConv1d, nn.Conv2d: SSLConv2d, nn.Conv3d: SSLConv3d},
    formula='`W = W0 diag(d)` (input channels)', params='`d_in`', source='subspace-tuning paper eq. 7 (D_1 W)',
    lr_mult=16.0))  # chosen on validation curves of three tasks (flora_mm.engine.defaults; docs/tuned_comparison.md)
SSB = register_method(Method(
    'SSB', layers={nn.Linear: SSBLinear, nn.Conv1d: SSBConv1d, nn.Conv2d: SSBConv2d, nn.Conv3d: SSBConv3d},
    formula='`W = diag(l) W0 diag(d)` (both)', params='`d_in + d_out`',
    source='subspace-tuning paper eq. 7 (D_1 W D_2)',
    lr_mult=16.0))  # chosen on validation curves of three tasks (flora_mm.engine.defaults; docs/tuned_comparison.md)

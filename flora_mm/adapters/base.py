"""The common machinery of adapted layers (plain PyTorch, nothing of OpenMMLab).

An adapted layer *is* its base layer: ``FLoRAConv2d`` subclasses ``nn.Conv2d`` and is created from an existing
``nn.Conv2d`` by sharing its ``weight`` / ``bias`` ``Parameter`` objects and every attribute (stride, padding,
padding_mode, hooks, ...). So

* the base parameters keep their original ``state_dict`` keys (``conv.weight``) and a plain checkpoint loads
  unchanged; the adapter adds new keys next to them (``conv.flora_core``, ``conv.lora_A``, ...);
* code that checks ``isinstance(m, nn.Conv2d)`` keeps working;
* :meth:`AdapterLayer.merge` gives back a module of the original class with ``W0 + dW`` and nothing else.

Every adapter defines its update ``update()`` (``dW`` of the method), the *effective weight*
``W = merged_weight()`` and ``delta_weight() = W - W0``. With DoRA's magnitude / direction split (``dora=True``, any
method: :meth:`AdapterLayer.merged_weight`) ``W = m (W0 + dW) / ||W0 + dW||`` per output channel, otherwise
``W = W0 + dW``. The layer's output is always exactly ``op(x, W, b)`` (``op`` = the base layer's linear /
convolution) -- except for a method with no weight form (``mergeable`` false: MPC_n), which only has its
``branch`` -- computed by one of:

* ``merged``   -- build ``W`` and run one ``op``; cheapest for depthwise convolutions and narrow layers, and what
  eval mode does with a cached ``W`` (recomputed only after ``train()`` or a parameter change);
* ``branch``   -- ``op(x, W0, b) + low_rank_op(x)`` without materialising ``dW`` (method-specific, e.g. FLoRA's
  1x1 -> core kxk -> 1x1 convolutions); cheapest when the weight gradient of ``op`` is expensive (wide layers
  on a CPU, see :meth:`AdapterLayer.rule_route`);
* ``two_pass`` -- ``op(x, W0, b) + op(x, dW)``, the form of the authors' reference code (also what
  adapter dropout needs where no branch exists).

``route='auto'`` (the default) picks a route at the layer's first training forward, when the device it trains on
is known (a model is usually built on the CPU and moved): by the rule of that device type
(:meth:`AdapterLayer.rule_route`; deterministic, the default policy ``cost_model``), or, with
``FLORA_MM_ROUTE_POLICY=measure``, by timing forward + backward of each route on that input, once per layer
signature (shapes, dtype, autocast, device; cached in-process and optionally on disk), like ``cudnn.benchmark``
(:mod:`flora_mm.adapters.routes`). Pin ``route=`` per adapter to bypass both. Every route computes the same
function.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import routes
from .config import AdapterConfig
from .routes import ROUTES, device_name

__all__ = ['AdapterLayer', 'conv_nd']


def conv_nd(ndim: int) -> Callable[..., Tensor]:
    """The functional convolution of a given number of spatial dimensions."""
    return (F.conv1d, F.conv2d, F.conv3d)[ndim - 1]


def _copy_module_state(state: dict) -> dict:
    # Shallow copy with fresh containers (_parameters, _modules, hooks...), sharing the tensors themselves.
    return {k: (copy.copy(v) if isinstance(v, dict) else v) for k, v in state.items()}


def _base_weight_loaded(layer: 'AdapterLayer', state_dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: a checkpoint holding the base weight but none of the adapter's tensors."""
    weight = state_dict.get(f'{prefix}weight')
    if weight is not None and not any(f'{prefix}{name}' in state_dict for name in layer.adapter_names):
        layer._base_weight_loaded(weight)


class AdapterLayer:
    """Mixin for an adapted ``nn.Linear`` / ``nn.ConvNd``; concrete classes are ``(Mixin, nn.Conv2d)`` etc., and
    set ``_op`` to the base class's operator (``F.linear`` / ``nn.ConvNd._conv_forward``).

    A method implements :meth:`_init_adapter` (create its parameters with ``register_parameter`` under the names
    listed in ``self.adapter_names``) and :meth:`update`, and may provide :meth:`_direction` (a faster
    ``W0 + update()``), a ``branch`` route (:meth:`_supports_branch`, :meth:`_branch`, :meth:`_prefer_branch`) and
    ``mergeable = False`` (no weight form). Everything else -- routes, DoRA's magnitude, the eval-mode weight
    cache, merging, state-dict hooks -- is here and knows nothing of ranks or factors.
    """

    adapter_names: tuple[str, ...]
    route: str
    _op: Callable[..., Tensor]
    #: whether the update has a weight form (``op(x, W0 + dW)``); False only for input-dependent updates (MPC_n)
    mergeable: bool = True

    # ----------------------------------------------------------------------------------------------- creation
    @classmethod
    def from_base(cls, base: nn.Module, cfg: AdapterConfig) -> 'AdapterLayer':
        """Create the adapted layer from ``base``, sharing its parameters (``base`` itself is not modified)."""
        layer = cls.__new__(cls)
        layer.__dict__.update(_copy_module_state(base.__dict__))
        before = set(layer.__dict__)
        layer._base_type = type(base)
        layer.dropout = getattr(cfg.options, 'dropout', 0.0)
        layer._merged_cache = None
        layer._init_adapter(cfg)
        layer.dora = bool(getattr(cfg.options, 'dora', False))
        if layer.dora:
            layer.register_parameter('dora_magnitude', layer._new_param(layer.weight.shape[0]))
            layer.adapter_names = (*layer.adapter_names, 'dora_magnitude')
            layer._reset_magnitude(layer.weight)
        layer.route = layer._choose_route(cfg.route)
        layer._base_load_hook = layer._register_load_state_dict_pre_hook(_base_weight_loaded, with_module=True)
        # Everything the adapter added to the instance, removed again by merge().
        layer._adapter_attrs = tuple(set(layer.__dict__) - before) + ('_adapter_attrs', )
        return layer

    def _base_weight_loaded(self, weight: Tensor) -> None:
        """Called when a checkpoint without this adapter's tensors loads a new base ``weight`` (e.g. pretrained
        weights loaded after injection): adapters whose initial state depends on ``W0`` re-derive it here, so
        the adapted model still equals the base model before training (DoRA: ``m = ||W0||``)."""
        if self.dora:
            self._reset_magnitude(weight)

    @torch.no_grad()
    def _reset_magnitude(self, weight: Tensor) -> None:
        self.dora_magnitude.copy_(_row_norm(weight.to(self.dora_magnitude)))

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        raise NotImplementedError

    def _new_param(self, *shape: int, fill: float | None = None) -> nn.Parameter:
        weight = self.weight
        param = nn.Parameter(torch.empty(shape, dtype=weight.dtype, device=weight.device))
        if fill is not None and param.device.type != 'meta':
            with torch.no_grad():
                param.fill_(fill)
        return param

    def _choose_route(self, route: str) -> str:
        if route == 'auto':
            routes.policy()  # an unknown FLORA_MM_ROUTE_POLICY fails when the model is built, not mid-training
        if route == 'auto' and len(self.candidate_routes()) == 1:
            route = self.candidate_routes()[0]
        if not self.mergeable and route not in ('auto', 'branch'):
            raise ValueError(f'{type(self).__name__} {self._describe()} has no weight form, only the branch route; '
                             f"use route='branch' or 'auto'")
        if route == 'branch' and not self._supports_branch():
            raise ValueError(f'{type(self).__name__} {self._describe()} has no branch implementation; '
                             f"use route='merged', 'two_pass' or 'auto'")
        if route == 'merged' and self.dropout:
            raise ValueError(f"route='merged' cannot apply adapter dropout ({self.dropout}) to "
                             f"{type(self).__name__} {self._describe()}; use route='auto'")
        return route

    def set_route(self, route: str) -> None:
        """Pin this layer's forward route (``'merged'``, ``'branch'``, ``'two_pass'``, or ``'auto'`` to choose
        again), validated as the ``route`` option is: a route the layer cannot take exactly is an error."""
        if route not in ('auto', *ROUTES):
            raise ValueError(f'unknown route {route!r}; choose from {("auto", *ROUTES)}')
        self.route = self._choose_route(route)

    def _supports_branch(self) -> bool:
        """Whether this layer has a ``branch`` route (override per method)."""
        return False

    def rule_route(self, device_type: str) -> str:
        """The route the ``cost_model`` policy gives this layer on a device of ``device_type`` (``'cpu'``,
        ``'cuda'``...): ``branch`` where :meth:`_prefer_branch` says so (a rule per device type, fitted on that
        device type's measurements), else ``merged`` -- or ``two_pass`` with adapter dropout, which ``merged``
        cannot apply. Deterministic: every run and every DDP rank on one device type takes the same routes."""
        if self._prefer_branch(device_type):
            return 'branch'
        return 'two_pass' if self.dropout else 'merged'

    def _prefer_branch(self, device_type: str) -> bool:
        """The ``cost_model`` policy's choice between ``branch`` and ``merged`` on ``device_type`` (override per
        method)."""
        return not self.mergeable

    def candidate_routes(self) -> tuple[str, ...]:
        """The exact routes this layer can take in training."""
        if not self.mergeable:
            return ('branch', )
        return tuple(r for r in ROUTES if (r != 'merged' or not self.dropout)
                     and (r != 'branch' or self._supports_branch()))

    def _signature(self) -> tuple:
        """What, besides shapes, the speed of this layer's routes depends on (override per method: ranks)."""
        return ()

    def route_key(self, x: Tensor) -> tuple:
        """What a route's speed depends on: the layer's operator and shapes, the input, dtype and device."""
        device = x.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        conv = tuple(getattr(self, k, None) for k in ('stride', 'padding', 'dilation', 'groups', 'padding_mode'))
        layout = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return (type(self).__name__, tuple(self.weight.shape), self._signature(), bool(self.dropout), self.dora,
                conv, tuple(x.shape), str(x.dtype), str(self.weight.dtype), str(autocast), layout, x.requires_grad,
                device_name(device))

    def _measured_route(self, x: Tensor) -> str:
        """The fastest exact route for this layer on ``x`` (forward + backward), measured once per
        :meth:`route_key` and cached (see :mod:`flora_mm.adapters.routes`)."""
        return routes.choose(self.route_key(x), self.candidate_routes(), lambda route: self._time_route(route, x),
                             x.device.type)

    def _time_route(self, route: str, x: Tensor) -> Callable[[], None]:
        """A closure running one forward + backward of ``route`` on a detached copy of ``x``, without touching
        any ``.grad``, the RNG streams or an enclosing saved-tensor hook (activation checkpointing)."""
        x = x.detach().requires_grad_(x.requires_grad)
        inputs = [p for p in self.adapter_parameters().values() if p.requires_grad] + [x] * x.requires_grad
        forward = dict(merged=self._merged_forward, branch=self._branch_forward, two_pass=self._two_pass_forward)[route]

        def step() -> None:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                out = forward(x)
                if inputs:
                    torch.autograd.grad(out, inputs, torch.ones_like(out))
        return step

    def _describe(self) -> str:
        return f'(weight {tuple(self.weight.shape)}, groups {getattr(self, "groups", 1)})'

    # ------------------------------------------------------------------------------------------------ maths
    def update(self) -> Tensor:
        """``dW``: the method's update of the base weight (shape of ``weight``), before DoRA's normalisation."""
        raise NotImplementedError

    def _direction(self) -> Tensor:
        """``W0 + update()`` (methods override it with a fused form)."""
        return self.weight + self.update()

    def delta_weight(self) -> Tensor:
        """``W - W0``: the update this adapter applies to the base weight (shape of ``weight``)."""
        if not self.mergeable:
            raise NotImplementedError(f'{type(self).__name__} {self._describe()}: {self._not_mergeable()}')
        return self.merged_weight() - self.weight if self.dora else self.update()

    def merged_weight(self) -> Tensor:
        """The effective weight: ``W0 + dW`` or, with DoRA, ``m (W0 + dW) / ||W0 + dW||`` per output channel."""
        direction = self._direction()
        return self._channel_scale(direction) * direction if self.dora else direction

    def _not_mergeable(self) -> str:
        return 'the update has no weight form'

    @property
    def output_rank(self) -> int | None:
        """The rank of the update along the output mode where the method bounds it (low-rank methods), else None."""
        return None

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters by local name (the base ``weight`` / ``bias`` are not among them).

        Looked up as attributes, not in ``_parameters``: FSDP (``use_orig_params=True``) swaps them for plain
        tensor views of its flat parameter around forward and backward."""
        return {name: getattr(self, name) for name in self.adapter_names}

    # ------------------------------------------------------------------------------------ DoRA's magnitude
    def _channel_scale(self, direction: Tensor | None = None) -> Tensor:
        """``m / ||W0 + dW||`` per output channel (the norm a constant in backward, DoRA paper Sec. 4.3), shaped to
        broadcast against the weight. Without ``direction`` the norm is taken of ``_direction()`` outside autograd,
        so the routes that never build ``W`` keep no weight-sized tensor for backward."""
        if direction is None:
            with torch.no_grad():
                direction = self._direction()
        scale = self.dora_magnitude / _row_norm(direction.detach())
        return scale.view(-1, *(1, ) * (self.weight.dim() - 1))

    def _per_channel(self, vector: Tensor, ndim: int) -> Tensor:
        """A per-channel ``vector`` shaped to broadcast against this layer's ``ndim``-dimensional input or output:
        Linear ``[..., C]``, ConvNd ``[N, C, *spatial]``."""
        return vector if self.weight.dim() == 2 else vector.view(-1, *(1, ) * (ndim - 2))

    def _output_scale(self, x_dim: int) -> Tensor:
        return self._per_channel(self._channel_scale().flatten(), x_dim)

    def _add_bias(self, out: Tensor, bias: Tensor | None) -> Tensor:
        if bias is None:
            return out
        return out + self._per_channel(bias.to(out.dtype), out.dim())  # keep autocast's dtype

    def _magnitude(self, out: Tensor, x_dim: int) -> Tensor:
        """DoRA on an output computed without bias: the channel scale, then the bias."""
        return self._add_bias(out * self._output_scale(x_dim).to(out.dtype), self.bias)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.mergeable and not self._adapter_needs_grad():
            return self._op(x, self._cached_merged_weight(), self.bias)
        if self.route == 'auto':  # first training step: the device's rule, or the fastest route measured on x
            self.route = self.rule_route(x.device.type) if routes.policy() == 'cost_model' else self._measured_route(x)
        if self.route == 'merged':
            return self._merged_forward(x)
        if self.route == 'branch':
            return self._branch_forward(x)
        return self._two_pass_forward(x)

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def _merged_forward(self, x: Tensor) -> Tensor:
        return self._op(x, self.merged_weight(), self.bias)

    def _two_pass_forward(self, x: Tensor) -> Tensor:
        if self.dora:
            out = self._op(x, self.weight, None) + self._op(self._drop(x), self.update(), None)
            return self._magnitude(out, x.dim())
        return self._op(x, self.weight, self.bias) + self._op(self._drop(x), self.update(), None)

    def _branch_forward(self, x: Tensor) -> Tensor:
        """``branch``: the method's :meth:`_branch`; with DoRA, its bias-free output times the channel scale (no
        weight gradient, only the layer's output kept for ``m``'s gradient), plus the bias."""
        if self.dora:
            return self._magnitude(self._branch(x, None), x.dim())
        return self._branch(x, self.bias)

    def _branch(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """``op(x, W0, bias)`` plus the update computed without materialising ``dW`` (override per method)."""
        raise NotImplementedError

    def _adapter_needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.adapter_parameters().values())

    def _cached_merged_weight(self) -> Tensor:
        params = (self.weight, *self.adapter_parameters().values())
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._merged_cache is None or self._merged_cache[0] != key:
            # Full precision, whatever autocast region the first eval call happens in.
            with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):
                self._merged_cache = (key, self.merged_weight())
        return self._merged_cache[1]

    def train(self, mode: bool = True):
        self._merged_cache = None  # invalidate the eval-mode weight cache
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._merged_cache = None  # .to() / .half() / .cuda() change the parameters
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------ merge
    def check_mergeable(self) -> None:
        """Raise ``ValueError`` saying why if this layer's update cannot be folded into its weight."""
        if not self.mergeable:
            raise ValueError(f'cannot merge {type(self).__name__} {self._describe()}: {self._not_mergeable()}. '
                             f'Keep the adapter (adapter-only checkpoints work) or train a mergeable form.')

    @torch.no_grad()
    def merge(self, check: bool = True) -> nn.Module:
        """Return a plain module of the base layer's class whose weight is the effective weight (same state_dict
        keys). The base ``weight`` Parameter object is updated in place and reused, so references to it stay valid.
        With ``check``, raises ``FloatingPointError`` if the merged weight is not finite (nothing is modified in
        that case); :func:`~flora_mm.adapters.merge_adapters` checks every layer first and merges without it.
        Raises ``ValueError`` for an update without a weight form (:meth:`check_mergeable`)."""
        self.check_mergeable()
        merged = self.merged_weight()
        if check and not torch.isfinite(merged).all():
            raise FloatingPointError(f'merging {type(self).__name__} {self._describe()} gives non-finite weights')
        self._base_load_hook.remove()
        state = {k: v for k, v in self.__dict__.items() if k not in self._adapter_attrs}
        state = _copy_module_state(state)
        for name in self.adapter_names:
            state['_parameters'].pop(name)
        self.weight.copy_(merged)
        plain = self._base_type.__new__(self._base_type)
        plain.__dict__.update(state)
        return plain

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, route={self.route}' + (', dora' if self.dora else '')


def _row_norm(weight: Tensor) -> Tensor:
    return torch.linalg.vector_norm(weight.flatten(1), dim=1)

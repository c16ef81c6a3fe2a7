"""The common machinery of adapted layers (plain PyTorch, nothing of OpenMMLab).

An adapted layer *is* its base layer: ``FLoRAConv2d`` subclasses ``nn.Conv2d`` and is created from an existing
``nn.Conv2d`` by sharing its ``weight`` / ``bias`` ``Parameter`` objects and every attribute (stride, padding,
padding_mode, hooks, ...). So

* the base parameters keep their original ``state_dict`` keys (``conv.weight``) and a plain checkpoint loads
  unchanged; the adapter adds new keys next to them (``conv.flora_core``, ``conv.lora_A``, ...);
* code that checks ``isinstance(m, nn.Conv2d)`` keeps working;
* :meth:`AdapterLayer.merge` gives back a module of the original class with ``W0 + dW`` and nothing else.

Every adapter defines the *effective weight* ``W = merged_weight()`` and ``delta_weight() = W - W0``. The layer's
output is always exactly ``op(x, W, b)`` (``op`` = the base layer's linear / convolution), computed by one of:

* ``merged``   -- build ``W`` and run one ``op``; cheapest for depthwise convolutions and narrow layers, and what
  eval mode does with a cached ``W`` (recomputed only after ``train()`` or a parameter change);
* ``branch``   -- ``op(x, W0, b) + low_rank_op(x)`` without materialising ``dW`` (method-specific, e.g. FLoRA's
  1x1 -> core kxk -> 1x1 convolutions); cheapest when the weight gradient of ``op`` is expensive (wide layers,
  see :meth:`AdapterLayer._prefer_branch`);
* ``two_pass`` -- ``op(x, W0, b) + op(x, dW)``, the form of the authors' reference code (also what
  adapter dropout needs where no branch exists).

``impl='auto'`` (the default) picks the fastest of these on the device and dtype the layer trains on: at the
layer's first training forward it times forward + backward of each route on that input, once per layer signature
(shapes, dtype, autocast, device; cached in-process and optionally on disk), like ``cudnn.benchmark``. For
reproducible route choices, pin ``impl=`` per adapter or switch every layer to the CPU-fitted rule with
``FLORA_MM_ROUTE_POLICY=cost_model`` (:mod:`flora_mm.adapters.routes`). Every route computes the same function.
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

__all__ = ['AdapterLayer', 'BRANCH_OFFSETS', 'BRANCH_WIDTH_PER_RANK', 'adapted_classes', 'conv_nd']

#: Under the ``cost_model`` route policy, ``impl='auto'`` takes the factorised branch for a layer of rank ``r`` iff
#: ``d_in * d_out / (d_in + d_out) >= BRANCH_WIDTH_PER_RANK * (r + BRANCH_OFFSETS[kind])``, ``kind`` being
#: ``'pointwise'`` (Linear, 1x1 convolution), ``'spatial'`` (k x k convolution, stride 1) or ``'strided'``
#: (patchify / downsampling convolution); see ``_prefer_branch``.
BRANCH_WIDTH_PER_RANK = 1.2
BRANCH_OFFSETS = {'pointwise': 66, 'spatial': 26, 'strided': 196}


def conv_nd(ndim: int) -> Callable[..., Tensor]:
    """The functional convolution of a given number of spatial dimensions."""
    return (F.conv1d, F.conv2d, F.conv3d)[ndim - 1]


#: The operator each base layer class computes with an explicit weight: ``_op(x, weight, bias)``.
_BASE_OPS: dict[type, Callable] = {nn.Linear: staticmethod(F.linear), nn.Conv1d: nn.Conv1d._conv_forward,
                                   nn.Conv2d: nn.Conv2d._conv_forward, nn.Conv3d: nn.Conv3d._conv_forward}


def adapted_classes(mixin: type, prefix: str, module: str, update: str) -> dict[type, type]:
    """``{base: class}``: for each base layer class (``nn.Linear``, ``nn.Conv1d/2d/3d``) the class
    ``{prefix}{base}`` that is ``mixin`` on top of it (``LoRAConv2d = LoRALayer + nn.Conv2d``), documented as
    "``nn.{base}`` with {update}". ``module`` is the defining module's ``__name__``, where the caller binds the
    names (pickling and ``repr`` find them there)."""
    return {base: type(f'{prefix}{base.__name__}', (mixin, base),
                       dict(_op=op, __doc__=f'``nn.{base.__name__}`` with {update}.', __module__=module,
                            __qualname__=f'{prefix}{base.__name__}'))
            for base, op in _BASE_OPS.items()}


def _copy_module_state(state: dict) -> dict:
    # Shallow copy with fresh containers (_parameters, _modules, hooks...), sharing the tensors themselves.
    return {k: (copy.copy(v) if isinstance(v, dict) else v) for k, v in state.items()}


def _base_weight_loaded(layer: 'AdapterLayer', state_dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: a checkpoint holding the base weight but none of the adapter's tensors."""
    weight = state_dict.get(f'{prefix}weight')
    if weight is not None and not any(f'{prefix}{name}' in state_dict for name in layer.adapter_names):
        layer._base_weight_loaded(weight)


class AdapterLayer:
    """Mixin for an adapted ``nn.Linear`` / ``nn.ConvNd``; concrete classes are ``(Mixin, nn.Conv2d)`` etc.

    Subclasses implement :meth:`_init_adapter` (create the adapter parameters, registered with
    ``register_parameter`` under names listed in ``self.adapter_names``) and :meth:`delta_weight`, and may
    provide a ``_branch`` route. The base-layer operator is ``self._op(x, weight, bias)``.
    """

    adapter_names: tuple[str, ...]
    scale: float
    impl: str

    # ----------------------------------------------------------------------------------------------- creation
    @classmethod
    def from_base(cls, base: nn.Module, cfg: AdapterConfig) -> 'AdapterLayer':
        """Create the adapted layer from ``base``, sharing its parameters (``base`` itself is not modified)."""
        layer = cls.__new__(cls)
        layer.__dict__.update(_copy_module_state(base.__dict__))
        before = set(layer.__dict__)
        layer._base_type = type(base)
        layer.scale = cfg.scale
        layer.dropout = cfg.dropout
        layer._merged_cache = None
        layer._init_adapter(cfg)
        layer.impl = layer._choose_impl(cfg.impl)
        layer._base_load_hook = layer._register_load_state_dict_pre_hook(_base_weight_loaded, with_module=True)
        # Everything the adapter added to the instance, removed again by merge().
        layer._adapter_attrs = tuple(set(layer.__dict__) - before) + ('_adapter_attrs', )
        return layer

    def _base_weight_loaded(self, weight: Tensor) -> None:
        """Called when a checkpoint without this adapter's tensors loads a new base ``weight`` (e.g. pretrained
        weights loaded after injection): adapters whose initial state depends on ``W0`` re-derive it here, so
        the adapted model still equals the base model before training."""

    def _init_adapter(self, cfg: AdapterConfig) -> None:
        raise NotImplementedError

    def _new_param(self, *shape: int) -> nn.Parameter:
        weight = self.weight
        return nn.Parameter(torch.empty(shape, dtype=weight.dtype, device=weight.device))

    def _choose_impl(self, impl: str) -> str:
        if impl == 'auto' and routes.policy() == 'cost_model':
            impl = 'branch' if self._prefer_branch() else ('two_pass' if self.dropout else 'merged')
        if impl == 'auto' and len(self.candidate_routes()) == 1:
            impl = self.candidate_routes()[0]
        if impl == 'branch' and not self._supports_branch():
            raise ValueError(f'{type(self).__name__} {self._describe()} has no branch implementation; '
                             f"use impl='merged', 'two_pass' or 'auto'")
        if impl == 'merged' and self.dropout:
            raise ValueError(f"impl='merged' cannot apply adapter dropout ({self.dropout}) to "
                             f"{type(self).__name__} {self._describe()}; use impl='auto'")
        return impl

    def set_route(self, impl: str) -> None:
        """Pin this layer's forward route (``'merged'``, ``'branch'``, ``'two_pass'``, or ``'auto'`` to choose
        again), validated as the ``impl`` option is: a route the layer cannot take exactly is an error."""
        if impl not in ('auto', *ROUTES):
            raise ValueError(f'unknown route {impl!r}; choose from {("auto", *ROUTES)}')
        self.impl = self._choose_impl(impl)

    def _supports_branch(self) -> bool:
        """Whether this layer has a ``branch`` route (override per method)."""
        return False

    def _branch_rank(self) -> int:
        """The width of the ``branch`` route's low-rank products (override per method)."""
        raise NotImplementedError

    def _prefer_branch(self) -> bool:
        """The ``cost_model`` policy's choice between ``branch`` and ``merged``: a rule fitted on a 2-core CPU.

        Per input row, ``merged`` adds the weight-gradient GEMM of ``op`` (``d_in * d_out`` multiply-adds);
        ``branch`` adds six skinny products of width ``r`` plus fixed passes over the row, a cost
        ``~(d_in + d_out) (r + c)``. So the branch pays off once the width ``d_in d_out / (d_in + d_out)`` (``d_in`` =
        input channels / groups x kernel size) reaches ``BRANCH_WIDTH_PER_RANK * (r + c)``, with ``c`` per layer
        kind (``BRANCH_OFFSETS``). The measurements the constants were fitted to are in docs/benchmarks.md
        ("Per-layer route choice"); on another device they need not hold, which is why ``auto`` measures by default.
        """
        if not self._supports_branch():
            return False
        d_out, d_in = self.weight.shape[0], self.weight[0].numel()
        kind = ('strided' if max(getattr(self, 'stride', (1, ))) > 1 else
                'spatial' if self.weight[0, 0].numel() > 1 else 'pointwise')
        return d_in * d_out / (d_in + d_out) >= BRANCH_WIDTH_PER_RANK * (self._branch_rank() + BRANCH_OFFSETS[kind])

    def candidate_routes(self) -> tuple[str, ...]:
        """The exact routes this layer can take in training."""
        return tuple(r for r in ROUTES if (r != 'merged' or not self.dropout)
                     and (r != 'branch' or self._supports_branch()))

    def route_key(self, x: Tensor) -> tuple:
        """What a route's speed depends on: the layer's operator and shapes, the input, dtype and device."""
        device = x.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        conv = tuple(getattr(self, k, None) for k in ('stride', 'padding', 'dilation', 'groups', 'padding_mode'))
        layout = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return (type(self).__name__, tuple(self.weight.shape), self._branch_rank_or_none(), bool(self.dropout),
                conv, tuple(x.shape), str(x.dtype), str(self.weight.dtype), str(autocast), layout, x.requires_grad,
                device_name(device))

    def _branch_rank_or_none(self):
        return self._branch_rank() if self._supports_branch() else None

    def _measured_route(self, x: Tensor) -> str:
        """The fastest exact route for this layer on ``x`` (forward + backward), measured once per
        :meth:`_route_key` and cached (see :mod:`flora_mm.adapters.routes`)."""
        return routes.choose(self.route_key(x), self.candidate_routes(), lambda route: self._time_route(route, x),
                             x.device.type)

    def _time_route(self, route: str, x: Tensor) -> Callable[[], None]:
        """A closure running one forward + backward of ``route`` on a detached copy of ``x``, without touching
        any ``.grad``, the RNG streams or an enclosing saved-tensor hook (activation checkpointing)."""
        x = x.detach().requires_grad_(x.requires_grad)
        inputs = [p for p in self.adapter_parameters().values() if p.requires_grad] + [x] * x.requires_grad
        forward = dict(merged=lambda x: self._op(x, self.merged_weight(), self.bias), branch=self._branch_forward,
                       two_pass=self._two_pass_forward)[route]

        def step() -> None:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                out = forward(x)
                if inputs:
                    torch.autograd.grad(out, inputs, torch.ones_like(out))
        return step

    def _describe(self) -> str:
        return f'(weight {tuple(self.weight.shape)}, groups {getattr(self, "groups", 1)})'

    # ------------------------------------------------------------------------------------------------ maths
    def delta_weight(self) -> Tensor:
        """``W - W0``: the scaled update this adapter applies to the base weight (shape of ``weight``)."""
        raise NotImplementedError

    #: role -> name (state-dict key) of the parameter holding it: ``factor_out`` U, ``factor_in`` V, ``core`` G
    ROLE_KEYS: dict[str, str] = {}
    #: roles whose parameter holds the factor transposed (LoRA's ``lora_A = V^T``)
    TRANSPOSED_ROLES: frozenset[str] = frozenset()

    def _role(self, role: str) -> Tensor | None:
        key = self.ROLE_KEYS.get(role)
        if key is None:
            return None
        tensor = getattr(self, key)
        return tensor.t() if role in self.TRANSPOSED_ROLES else tensor

    @property
    def factor_out(self) -> Tensor:
        """``U``: the output-mode factor, ``[d_out (x k for loralib's conv LoRA), r]``."""
        return self._role('factor_out')

    @property
    def factor_in(self) -> Tensor:
        """``V``: the input-mode factor, ``[d_in / groups (x k...), r]`` (a view where stored transposed)."""
        return self._role('factor_in')

    @property
    def core(self) -> Tensor | None:
        """``G``: the core, or None where the method has none (LoRA: ``G = I``)."""
        return self._role('core')

    @property
    def output_rank(self) -> int:
        """The rank of the update along the output mode (LoRA: ``r``; FLoRA: ``r1``)."""
        raise NotImplementedError

    def merged_weight(self) -> Tensor:
        """The effective weight ``W = W0 + delta_weight()``."""
        return self.weight + self.delta_weight()

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters by local name (the base ``weight`` / ``bias`` are not among them).

        Looked up as attributes, not in ``_parameters``: FSDP (``use_orig_params=True``) swaps them for plain
        tensor views of its flat parameter around forward and backward."""
        return {name: getattr(self, name) for name in self.adapter_names}

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not self._adapter_needs_grad():
            return self._op(x, self._cached_merged_weight(), self.bias)
        if self.impl == 'auto':  # first training step: measure the routes on this input, keep the fastest
            self.impl = self._measured_route(x)
        if self.impl == 'merged':
            return self._op(x, self.merged_weight(), self.bias)
        if self.impl == 'branch':
            return self._branch_forward(x)
        return self._two_pass_forward(x)

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout else x

    def _two_pass_forward(self, x: Tensor) -> Tensor:
        return self._op(x, self.weight, self.bias) + self._op(self._drop(x), self.delta_weight(), None)

    def _branch_forward(self, x: Tensor) -> Tensor:
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
    @torch.no_grad()
    def merge(self, check: bool = True) -> nn.Module:
        """Return a plain module of the base layer's class whose weight is ``W0 + dW`` (same state_dict keys).

        The base ``weight`` Parameter object is updated in place and reused, so references to it stay valid.
        With ``check``, raises ``FloatingPointError`` if the merged weight is not finite (nothing is modified in
        that case); :func:`~flora_mm.adapters.merge_adapters` checks every layer first and merges without it.
        """
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
        return f'{super().extra_repr()}, scale={self.scale:g}, impl={self.impl}'

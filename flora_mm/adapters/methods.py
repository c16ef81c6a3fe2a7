"""The adaptation methods, each declared once, next to its layers (plain PyTorch).

A :class:`Method` says everything the rest of the package needs to know about a method: its options (a frozen
dataclass: the method's own fields, validated there -- no field of one method is accepted by another), the adapted
class for each base layer class, the layer kinds it targets by default and whether it trains the selected layers'
biases. ``flora.py`` declares FLoRA, ``lora.py`` LoRA, DoRA and TriLoRA, ``scaling.py`` (IA)^3, SSL and SSB;
BitFit, which adapts no layer, is declared here. Config validation (``config.py``), injection (``inject.py``) and
parameter budgets read :data:`METHODS`; nothing else branches on a method's name.

A new method is one file: its layer classes, its options dataclass (or one of those below) and one
:func:`register_method` call.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['COMMON_OPTIONS', 'METHODS', 'method_table', 'MPC_FORMS', 'MPC_NONLINEARITIES', 'FLoRAOptions', 'LowRankOptions', 'Method',
           'NoOptions', 'option_names', 'register_method']

#: Options of every method that adapts layers (besides ``type``); BitFit takes all but ``route`` / ``train_bias``.
COMMON_OPTIONS = frozenset({'targets', 'include', 'exclude', 'route', 'train_bias', 'train_norm', 'lr_mult'})
#: The matrix-pattern constraints of the subspace-tuning paper (Si et al., Sec. 4.2): ``orthogonal`` (eq. 20),
#: ``diagonal`` (eq. 21), ``nonlinear`` (MPC_n: an activation between the two factors, eq. 25).
MPC_FORMS = ('orthogonal', 'diagonal', 'nonlinear')
#: The activations MPC_n can put between the factors, by option value.
MPC_NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = dict(gelu=F.gelu, relu=F.relu, tanh=torch.tanh,
                                                                 silu=F.silu)


def _positive_int(name: str, method: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{method} adapter: {name} must be a positive integer, got {value!r}')


def _number(name: str, method: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{method} adapter: {name} must be a number, got {value!r}')
    return float(value)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without options of its own (BitFit; the scaling methods (IA)^3 / SSL / SSB)."""

    def validate(self, method: str) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the option and the method if a value is invalid."""


@dataclasses.dataclass(frozen=True)
class LowRankOptions(NoOptions):
    """Options of the factorised methods (LoRA, DoRA, TriLoRA; FLoRA adds ``kernel_rank``).

    Args:
        rank: Low-rank size ``r`` (see each method for its use on convolutions).
        scale: The constant ``s`` in ``W0 + s * dW``; finite and non-zero (a negative value warns). ``alpha`` in a
            config sets ``scale = alpha / rank``.
        dropout: Dropout on the adapter branch input (training only), in [0, 1).
        init: Factor initialisation (the method's ``INITS``).
        dora: DoRA's magnitude / direction split over the method's merged weight: ``W = m (W0 + dW) / ||W0 + dW||``
            per output channel, ``m`` trained and initialised to ``||W0||`` (Liu et al. 2024).
        mpc: A matrix-pattern constraint (:data:`MPC_FORMS`): ``orthogonal`` adds
            ``mpc_weight * (||V^T V - I||^2 + ||U^T U - I||^2)`` to the training loss, ``diagonal``
            ``mpc_weight * (||V^T V - I||^2 + ||U^T U - diag(U^T U)||^2)``; ``nonlinear`` computes the update
            branch as ``s * h(x V G^T) U^T`` (not mergeable).
        mpc_weight: The regulariser's weight ``lambda`` (``orthogonal`` / ``diagonal``).
        mpc_nonlinearity: ``h`` of ``mpc='nonlinear'`` (:data:`MPC_NONLINEARITIES`).
    """

    INITS: ClassVar[tuple[str, ...]] = ('kaiming', 'gaussian')
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.0
    init: str = 'kaiming'
    dora: bool = False
    mpc: str | None = None
    mpc_weight: float = 0.1
    mpc_nonlinearity: str = 'gelu'

    def validate(self, method: str) -> None:
        _positive_int('rank', method, self.rank)
        scale = _number('scale', method, self.scale)
        if not math.isfinite(scale) or scale == 0:
            raise ValueError(f'{method} adapter: scale must be a finite, non-zero number, got {self.scale!r} (the '
                             f'update s * dW would be {self.scale!r} * dW: with s = 0 no adapter parameter ever gets a '
                             f'gradient)')
        if not 0.0 <= _number('dropout', method, self.dropout) < 1.0:
            raise ValueError(f'{method} adapter: dropout must be in [0, 1), got {self.dropout!r}')
        if self.init not in self.INITS:
            raise ValueError(f'{method} adapter: unknown init {self.init!r}; choose from {self.INITS}')
        if not isinstance(self.dora, bool):
            raise TypeError(f'{method} adapter: dora must be True or False, got {self.dora!r}')
        if self.mpc is not None and self.mpc not in MPC_FORMS:
            raise ValueError(f'{method} adapter: unknown mpc {self.mpc!r}; choose from {MPC_FORMS} or None')
        weight = _number('mpc_weight', method, self.mpc_weight)
        if not math.isfinite(weight) or weight < 0 or (self.mpc in ('orthogonal', 'diagonal') and weight == 0):
            raise ValueError(f'{method} adapter: mpc_weight must be a finite number > 0 with mpc={self.mpc!r}, got '
                             f'{self.mpc_weight!r}')
        if self.mpc_nonlinearity not in MPC_NONLINEARITIES:
            raise ValueError(f'{method} adapter: unknown mpc_nonlinearity {self.mpc_nonlinearity!r}; choose from '
                             f'{tuple(MPC_NONLINEARITIES)}')
        if self.mpc == 'nonlinear' and self.dora:
            raise ValueError(f"{method} adapter: mpc='nonlinear' has no weight form, so DoRA's weight normalisation "
                             f'(dora=True) cannot apply to it')


@dataclasses.dataclass(frozen=True)
class FLoRAOptions(LowRankOptions):
    """LoRA's options and ``kernel_rank``, the rank ``r3`` of every spatial mode of a convolution kernel."""

    INITS: ClassVar[tuple[str, ...]] = ('kaiming', 'gaussian', 'orthogonal')
    kernel_rank: int = 2

    def validate(self, method: str) -> None:
        super().validate(method)
        _positive_int('kernel_rank', method, self.kernel_rank)


def option_names(options: type) -> frozenset[str]:
    """The option fields of an options dataclass."""
    return frozenset(f.name for f in dataclasses.fields(options))


@dataclasses.dataclass(frozen=True)
class Method:
    """One adaptation method.

    Args:
        name: Its ``type`` in an adapter config.
        options: Its options dataclass (:class:`NoOptions`, :class:`LowRankOptions`...); a key of another method
            is dropped with a warning, a key no method knows is an error.
        layers: Adapted class for each base layer class (``nn.Linear`` / ``nn.ConvNd``); empty if the method adapts
            no layer (BitFit).
        default_targets: Layer kinds (``config.LAYER_KINDS``) it adapts when the config gives no ``targets``.
        trains_bias: It trains the biases of the selected layers (and selects only layers with a bias): BitFit.
        common: The :data:`COMMON_OPTIONS` it understands.
        fixed: Option values the method implies and refuses to change (DoRA: ``dora=True``).
        formula: The update, for docs and error messages.
        params: Its parameter count per adapted layer, for docs.
        mergeable: When its update folds into the weight, for docs.
        source: Where the method comes from.
        lr_mult: The multiplier on the optimizer's learning rate that the parameters it trains get when the config
            sets no ``lr_mult`` (applied by the OpenMMLab optimizer constructor of :mod:`flora_mm.engine`). A
            config's learning rate is set for full fine-tuning; each method's multiplier relative to it is chosen
            on the tuned comparison's validation curves (:mod:`flora_mm.engine.defaults`).
    """
    name: str
    options: type = NoOptions
    layers: Mapping[type, type] = dataclasses.field(default_factory=dict)
    default_targets: tuple[str, ...] = ('linear', 'conv')
    trains_bias: bool = False
    common: frozenset[str] = COMMON_OPTIONS
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    formula: str = ''
    params: str = ''
    mergeable: str = 'yes, exactly'
    source: str = ''
    lr_mult: float = 1.0

    @property
    def option_names(self) -> frozenset[str]:
        """Every config key it understands besides ``type`` (common options and its own)."""
        return self.common | option_names(self.options) | ({'alpha'} if 'rank' in option_names(self.options) else
                                                            frozenset())


def method_table() -> str:
    """A Markdown table of every declared method: update, parameters per layer, mergeability, default lr_mult,
    source."""
    lines = ['| method | update | parameters per layer | mergeable | default `lr_mult` | source |',
             '|---|---|---|---|---:|---|']
    for m in METHODS.values():
        lines.append(f'| `{m.name}` | {m.formula} | {m.params} | {m.mergeable} | {m.lr_mult:g} | {m.source} |')
    return '\n'.join(lines) + '\n'


#: Every known method by name.
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name is declared once)."""
    if method.name in METHODS:
        raise ValueError(f'adapter method {method.name!r} is already declared')
    METHODS[method.name] = method
    return method


# BitFit adapts no layer: it trains the biases of the selected layers (norms.py keeps that exact for norm layers
# whose weight stays frozen).
register_method(Method('BitFit', common=frozenset({'targets', 'include', 'exclude', 'train_norm', 'lr_mult'}),
                       default_targets=('all', ), trains_bias=True, formula='`b -> b + db` (biases only)',
                       params='`d_out` (its bias)', mergeable='nothing to merge (the bias itself trains)',
                       source='Zaken et al. 2021',
                       lr_mult=16.0))  # chosen on validation curves of three tasks (flora_mm.engine.defaults)

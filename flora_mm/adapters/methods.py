"""The adaptation methods, each declared once, next to its layers (plain PyTorch).

A :class:`Method` says everything the rest of the package needs to know about a method: the config options it
understands, the adapted class for each base layer class, the factor initialisations it accepts, the layer kinds it
targets by default and whether it trains the selected layers' biases. ``flora.py`` declares FLoRA, ``lora.py``
LoRA and DoRA; BitFit, which adapts no layer, is declared here. Config validation (``config.py``), injection
(``inject.py``) and parameter budgets read :data:`METHODS`; nothing else branches on a method's name.

A new method is one :func:`register_method` call beside its layer classes (an option no method had before also
needs its field in :class:`~flora_mm.adapters.AdapterConfig`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ['COMMON_OPTIONS', 'LOW_RANK_OPTIONS', 'METHODS', 'Method', 'register_method']

#: Options every method understands (besides ``type``).
COMMON_OPTIONS = frozenset({'targets', 'include', 'exclude', 'train_bias', 'train_norm'})
#: Options of the low-rank methods.
LOW_RANK_OPTIONS = COMMON_OPTIONS | {'rank', 'scale', 'alpha', 'dropout', 'impl', 'init'}


@dataclasses.dataclass(frozen=True)
class Method:
    """One adaptation method.

    Args:
        name: Its ``type`` in an adapter config.
        options: Config keys it understands besides ``type``; a key of another method is dropped with a warning,
            a key no method knows is an error.
        layers: Adapted class for each base layer class (``nn.Linear`` / ``nn.ConvNd``); empty if the method adapts
            no layer (BitFit).
        inits: Factor initialisations it accepts.
        default_targets: Layer kinds (``config.LAYER_KINDS``) it adapts when the config gives no ``targets``.
        trains_bias: It trains the biases of the selected layers (and selects only layers with a bias): BitFit.
    """
    name: str
    options: frozenset[str]
    layers: Mapping[type, type] = dataclasses.field(default_factory=dict)
    inits: tuple[str, ...] = ('kaiming', )
    default_targets: tuple[str, ...] = ('linear', 'conv')
    trains_bias: bool = False


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
register_method(Method('BitFit', options=frozenset({'targets', 'include', 'exclude', 'train_norm'}),
                       default_targets=('all', ), trains_bias=True))

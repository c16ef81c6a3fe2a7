"""Validated adapter configuration.

An adapter is described by a plain dict, as it appears in an OpenMMLab config::

    dict(type='FLoRA', rank=16, kernel_rank=2, scale=4.0,
         targets=['linear', 'conv'], include=[r'stages\\.[23]'], exclude=[r'downsample'])

:func:`AdapterConfig.from_dict` turns it into an immutable, validated object: the options every method shares
(where adapters go, what else trains) and the method's own options, an instance of its options dataclass
(:mod:`flora_mm.adapters.methods`). Every mistake is reported with the offending key and value: an unknown adapter
type, a key no method knows (a typo), an invalid value, both ``scale`` and ``alpha``, an unknown layer kind or
route. A key that belongs to *another* method is dropped with one warning naming it, so that switching
the method of a config from the command line works (``--cfg-options model.backbone.adapter.type=LoRA`` on a FLoRA
config that sets ``kernel_rank``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import methods

__all__ = ['AdapterConfig', 'LAYER_KINDS', 'ROUTE_OPTIONS']

#: Layer kinds accepted in ``targets``. ``'conv'`` means every ``ConvNd``; ``'all'`` (BitFit only) every module.
LAYER_KINDS = ('linear', 'conv', 'conv1d', 'conv2d', 'conv3d', 'all')
#: Forward routes an adapter may pin; ``auto`` lets each layer take one at its first training step (see
#: ``AdapterLayer`` and :mod:`flora_mm.adapters.routes`).
ROUTE_OPTIONS = ('auto', 'merged', 'branch', 'two_pass')

_logger = logging.getLogger(__name__)


def _as_tuple(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value, )
    if isinstance(value, Sequence):
        return tuple(value)
    raise TypeError(f'adapter option {key!r} must be a string or a list of strings, got {value!r}')


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Immutable, validated adapter options.

    Args:
        type: A method of :data:`~flora_mm.adapters.methods.METHODS` (``'FLoRA'``, ``'LoRA'``, ``'DoRA'``,
            ``'TriLoRA'``, ``'IA3'``, ``'SSL'``, ``'SSB'``, ``'BitFit'``).
        targets: Layer kinds to adapt (see :data:`LAYER_KINDS`); default: the method's.
        include: Regexes (``re.search`` on the module's qualified name); if given, only matching layers are adapted.
        exclude: Regexes of layers never adapted. Every include / exclude pattern must match at least one layer.
        route: Forward route, see :data:`ROUTE_OPTIONS` (``impl``, its former name, is still read, with a
            warning).
        train_bias: Also train the biases of the adapted layers.
        train_norm: Also train the affine parameters of normalisation layers.
        lr_mult: Multiplier on the optimizer's learning rate for every parameter this adapter trains (its own and
            the base parameters it unfreezes), on top of any ``paramwise_cfg``; None: the method's default
            (:attr:`effective_lr_mult`). Applied by ``AdapterOptimWrapperConstructor``.
        options: The method's own options (its options dataclass, e.g.
            :class:`~flora_mm.adapters.methods.FLoRAOptions`); read them as attributes of the config too
            (``cfg.rank``), which names the method when it has no such option.
    """

    type: str
    targets: tuple[str, ...] = ('linear', 'conv')
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    route: str = 'auto'
    train_bias: bool = False
    train_norm: bool = False
    lr_mult: float | None = None
    options: Any = None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | 'AdapterConfig') -> 'AdapterConfig':
        """Build from an mm-style dict, raising ``ValueError`` / ``TypeError`` that names the problem."""
        if isinstance(cfg, AdapterConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise TypeError(f'adapter config must be a dict, got {type(cfg).__name__}')
        registry = methods.METHODS
        cfg = dict(cfg)
        if 'impl' in cfg:  # the option's former name
            if 'route' in cfg:
                raise ValueError(f'adapter config: give route, not both route and impl (its former name): {cfg}')
            _logger.warning("adapter option 'impl' is now called 'route'; reading impl=%r as route", cfg['impl'])
            cfg['route'] = cfg.pop('impl')
        if 'type' not in cfg:
            raise ValueError(f'adapter config needs a "type" (one of {sorted(registry)}), got {cfg}')
        kind = cfg.pop('type')
        if kind not in registry:
            raise ValueError(f'unknown adapter type {kind!r}; known types: {sorted(registry)}')
        method = registry[kind]
        allowed = method.option_names
        unknown = sorted(set(cfg) - set().union(*(m.option_names for m in registry.values())))
        if unknown:
            raise ValueError(f'{kind} adapter got unknown option(s) {unknown}; it accepts {sorted(allowed)}')
        foreign = sorted(set(cfg) - allowed)
        if foreign:  # options of another method, e.g. left over after switching the type on the command line
            _logger.warning(f'{kind} adapter: ignoring option(s) {foreign}, which only other adapter types use')
            cfg = {k: v for k, v in cfg.items() if k in allowed}
        if 'scale' in cfg and 'alpha' in cfg:
            raise ValueError(f'{kind} adapter: give either scale or alpha (scale = alpha / rank), not both')
        for key, value in method.fixed.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(f'{kind} adapter: {key} is always {value!r} for {kind}, got {cfg[key]!r}')
            cfg[key] = value
        own = {k: cfg.pop(k) for k in list(cfg) if k in methods.option_names(method.options)}
        if 'alpha' in cfg:
            alpha = cfg.pop('alpha')
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
                raise TypeError(f'{kind} adapter: alpha must be a number, got {alpha!r}')
            rank = own.get('rank', method.options.rank)
            methods._positive_int('rank', kind, rank)
            own['scale'] = float(alpha) / rank
        kwargs: dict[str, Any] = dict(type=kind, options=method.options(**own))  # validated in __post_init__
        kwargs['targets'] = _as_tuple(cfg.pop('targets', method.default_targets), 'targets')
        for key in ('include', 'exclude'):
            kwargs[key] = _as_tuple(cfg.pop(key, ()), key)
        kwargs.update(cfg)
        return cls(**kwargs)

    def __post_init__(self) -> None:
        if self.options is None:  # built directly: the method's defaults
            object.__setattr__(self, 'options', self.method.options())
        if not isinstance(self.options, self.method.options):
            raise TypeError(f'{self.type} adapter: options must be a {self.method.options.__name__}, got '
                            f'{type(self.options).__name__}')
        self.options.validate(self.type)
        scale = getattr(self.options, 'scale', None)
        if isinstance(scale, int):  # a validated number: kept as float, as the layers compute with it
            object.__setattr__(self, 'options', dataclasses.replace(self.options, scale=float(scale)))
        if scale is not None and scale < 0:
            _logger.warning(f'{self.type} adapter: negative scale {scale:g}: the update is subtracted '
                            f'(W0 - {-scale:g} * dW); the same model as the positive scale with the core / factor '
                            f'sign flipped -- check that this is intended')
        bad = [t for t in self.targets if t not in LAYER_KINDS]
        if bad or not self.targets:
            raise ValueError(f'{self.type} adapter: unknown target kind(s) {bad or self.targets}; '
                             f'choose from {LAYER_KINDS}')
        if 'all' in self.targets and not self.method.trains_bias:
            bias_methods = '/'.join(name for name, method in methods.METHODS.items() if method.trains_bias)
            raise ValueError(f"target kind 'all' is only meaningful for {bias_methods}, not {self.type}")
        if self.route not in ROUTE_OPTIONS:
            raise ValueError(f'{self.type} adapter: unknown route {self.route!r}; choose from {ROUTE_OPTIONS}')
        for key in ('train_bias', 'train_norm'):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f'{self.type} adapter: {key} must be True or False, got {getattr(self, key)!r}')
        if self.lr_mult is not None:
            if isinstance(self.lr_mult, bool) or not isinstance(self.lr_mult, (int, float)):
                raise TypeError(f'{self.type} adapter: lr_mult must be a number or None, got {self.lr_mult!r}')
            if not (math.isfinite(self.lr_mult) and self.lr_mult > 0):
                raise ValueError(f'{self.type} adapter: lr_mult must be a finite number > 0 (a multiplier on the '
                                 f'learning rate), got {self.lr_mult!r}')
        for key in ('include', 'exclude'):
            for pattern in getattr(self, key):
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as err:
                    raise ValueError(f'{self.type} adapter: {key} pattern {pattern!r} is not a regex: {err}') \
                        from err

    def __getattr__(self, name: str) -> Any:
        # only for names that are not fields: the method's own options (cfg.rank, cfg.kernel_rank...)
        options = self.__dict__.get('options')
        if options is not None and name in methods.option_names(type(options)):
            return getattr(options, name)
        raise AttributeError(f'{self.__dict__.get("type", "this")} adapter has no option {name!r}')

    @property
    def effective_lr_mult(self) -> float:
        """The learning-rate multiplier of this adapter's parameters: ``lr_mult``, else the method's default."""
        return float(self.lr_mult if self.lr_mult is not None else self.method.lr_mult)

    @property
    def method(self):
        """The :class:`~flora_mm.adapters.methods.Method` this config selects."""
        return methods.METHODS[self.type]

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict that :meth:`from_dict` accepts (e.g. for checkpoint metadata)."""
        out = dict(type=self.type)
        for key in sorted(self.method.common):
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        out.update(dataclasses.asdict(self.options))
        return out

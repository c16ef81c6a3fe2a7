"""Validated adapter configuration.

An adapter is described by a plain dict, as it appears in an OpenMMLab config::

    dict(type='FLoRA', rank=16, kernel_rank=2, scale=4.0,
         targets=['linear', 'conv'], include=[r'stages\\.[23]'], exclude=[r'downsample'])

:func:`AdapterConfig.from_dict` turns it into an immutable, validated object. Every mistake is reported with
the offending key and value: an unknown adapter type, a key no method knows (a typo), a non-positive rank, both
``scale`` and ``alpha``, an unknown layer kind or implementation. A key that belongs to *another* method is
dropped with one warning naming it, so that switching the method of a config from the command line works
(``--cfg-options model.backbone.adapter.type=LoRA`` on a FLoRA config that sets ``kernel_rank``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .methods import METHODS

__all__ = ['AdapterConfig', 'LAYER_KINDS', 'IMPLS']

#: Layer kinds accepted in ``targets``. ``'conv'`` means every ``ConvNd``; ``'all'`` (BitFit only) every module.
LAYER_KINDS = ('linear', 'conv', 'conv1d', 'conv2d', 'conv3d', 'all')
#: Forward implementations. ``auto`` picks the cheapest exact route per layer (see ``AdapterLayer``).
IMPLS = ('auto', 'merged', 'branch', 'two_pass')

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
        type: ``'FLoRA'``, ``'LoRA'``, ``'DoRA'`` or ``'BitFit'``.
        rank: Low-rank size ``r``. FLoRA uses ``r1 = r2 = rank`` (clamped to each mode's size); LoRA / DoRA use it
            as the matrix rank (``rank * k`` for convolutions, as loralib's ConvLoRA).
        kernel_rank: FLoRA only: the rank ``r3`` of every spatial mode of a convolution kernel (clamped to k).
        scale: The constant ``s`` in ``W0 + s * dW``. Defaults to ``alpha / rank`` if ``alpha`` is given, else 1.
        alpha: LoRA-style convenience: ``scale = alpha / rank``. Give ``scale`` or ``alpha``, not both.
        dropout: Dropout on the adapter branch input (training only).
        targets: Layer kinds to adapt (see :data:`LAYER_KINDS`).
        include: Regexes (``re.search`` on the module's qualified name); if given, only matching layers are adapted.
        exclude: Regexes of layers never adapted. Every include / exclude pattern must match at least one layer.
        impl: Forward route, see :data:`IMPLS`.
        init: Factor initialisation: ``'kaiming'`` (default), ``'gaussian'`` or, for FLoRA, ``'orthogonal'``.
        train_bias: Also train the biases of the adapted layers.
        train_norm: Also train the affine parameters of normalisation layers.
    """

    type: str
    rank: int = 8
    kernel_rank: int = 2
    scale: float = 1.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ('linear', 'conv')
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    impl: str = 'auto'
    init: str = 'kaiming'
    train_bias: bool = False
    train_norm: bool = False

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | 'AdapterConfig') -> 'AdapterConfig':
        """Build from an mm-style dict, raising ``ValueError`` / ``TypeError`` that names the problem."""
        if isinstance(cfg, AdapterConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise TypeError(f'adapter config must be a dict, got {type(cfg).__name__}')
        cfg = dict(cfg)
        if 'type' not in cfg:
            raise ValueError(f'adapter config needs a "type" (one of {sorted(METHODS)}), got {cfg}')
        kind = cfg.pop('type')
        if kind not in METHODS:
            raise ValueError(f'unknown adapter type {kind!r}; known types: {sorted(METHODS)}')
        allowed = METHODS[kind].options
        unknown = sorted(set(cfg) - set().union(*(m.options for m in METHODS.values())))
        if unknown:
            raise ValueError(f'{kind} adapter got unknown option(s) {unknown}; it accepts {sorted(allowed)}')
        foreign = sorted(set(cfg) - allowed)
        if foreign:  # options of another method, e.g. left over after switching the type on the command line
            _logger.warning(f'{kind} adapter: ignoring option(s) {foreign}, which only other adapter types use')
            cfg = {k: v for k, v in cfg.items() if k in allowed}
        if 'scale' in cfg and 'alpha' in cfg:
            raise ValueError(f'{kind} adapter: give either scale or alpha (scale = alpha / rank), not both')
        alpha = cfg.pop('alpha', None)
        kwargs: dict[str, Any] = dict(type=kind)
        kwargs['targets'] = _as_tuple(cfg.pop('targets', METHODS[kind].default_targets), 'targets')
        for key in ('include', 'exclude'):
            kwargs[key] = _as_tuple(cfg.pop(key, ()), key)
        kwargs.update(cfg)
        self = cls(**kwargs)
        if alpha is not None:
            if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
                raise TypeError(f'{kind} adapter: alpha must be a number, got {alpha!r}')
            self = dataclasses.replace(self, scale=float(alpha) / self.rank)  # validated again (alpha = 0 too)
        return self

    def __post_init__(self) -> None:
        for key in ('rank', 'kernel_rank'):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f'{self.type} adapter: {key} must be a positive integer, got {value!r}')
        if not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool):
            raise TypeError(f'{self.type} adapter: scale must be a number, got {self.scale!r}')
        object.__setattr__(self, 'scale', float(self.scale))
        if 'scale' in self.method.options:
            if not math.isfinite(self.scale) or self.scale == 0:
                raise ValueError(f'{self.type} adapter: scale must be a finite, non-zero number, got '
                                 f'{self.scale!r} (the update s * dW would be {self.scale!r} * dW: with s = 0 no '
                                 f'adapter parameter ever gets a gradient)')
            if self.scale < 0:
                _logger.warning(f'{self.type} adapter: negative scale {self.scale:g}: the update is subtracted '
                                f'(W0 - {-self.scale:g} * dW); the same model as the positive scale with the core / '
                                f'factor sign flipped -- check that this is intended')
        for key in ('train_bias', 'train_norm'):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f'{self.type} adapter: {key} must be True or False, got {getattr(self, key)!r}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'{self.type} adapter: dropout must be in [0, 1), got {self.dropout!r}')
        bad = [t for t in self.targets if t not in LAYER_KINDS]
        if bad or not self.targets:
            raise ValueError(f'{self.type} adapter: unknown target kind(s) {bad or self.targets}; '
                             f'choose from {LAYER_KINDS}')
        if 'all' in self.targets and not self.method.trains_bias:
            bias_methods = '/'.join(name for name, method in METHODS.items() if method.trains_bias)
            raise ValueError(f"target kind 'all' is only meaningful for {bias_methods}, not {self.type}")
        if self.impl not in IMPLS:
            raise ValueError(f'{self.type} adapter: unknown impl {self.impl!r}; choose from {IMPLS}')
        inits = self.method.inits
        if self.init not in inits:
            raise ValueError(f'{self.type} adapter: unknown init {self.init!r}; choose from {inits}')
        for key in ('include', 'exclude'):
            for pattern in getattr(self, key):
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as err:
                    raise ValueError(f'{self.type} adapter: {key} pattern {pattern!r} is not a regex: {err}') \
                        from err

    @property
    def method(self):
        """The :class:`~flora_mm.adapters.methods.Method` this config selects."""
        return METHODS[self.type]

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict that :meth:`from_dict` accepts (e.g. for checkpoint metadata)."""
        out = dataclasses.asdict(self)
        allowed = self.method.options | {'type'}
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items() if k in allowed}
        return out

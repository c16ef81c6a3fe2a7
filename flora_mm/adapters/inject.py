"""The one place that decides where adapters go: matching, injection, freezing, merging, adapter state dicts.

``inject_adapters(model, cfg)`` walks ``model``, selects layers by kind (``targets``) and by qualified name
(``include`` / ``exclude`` regexes), replaces each with its adapted twin (same parameters, same keys) and freezes
every other parameter of ``model``. What was injected is recorded on ``model`` (``model.adapter_state``), so the
other functions work on ``model`` or on any module that contains it (e.g. a detector around an adapted backbone).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import AdapterLayer
from .config import AdapterConfig
from . import flora, lora, scaling  # noqa: F401  (their modules declare the methods)
from .norms import remove_split_norm_bias, split_norm_bias

__all__ = ['BASE_LAYER_TYPES', 'AdapterState', 'StateDictMismatchError', 'adapted_layers', 'adapter_parameters', 'adapter_state_dict',
           'adapter_states',
           'clean_name', 'count_parameters', 'named_parameters', 'inject_adapters', 'layer_base_type',
           'load_adapter_state_dict', 'merge_adapters',
           'norm_layer_types', 'register_compatible_layer', 'register_norm_layer', 'state_dict_mismatches',
           'NORM_TYPES']

#: The standard layer classes an adapter can replace (subclasses count if they compute the same operator).
BASE_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_KIND_TYPES: dict[str, tuple[type, ...]] = {
    'linear': (nn.Linear, ), 'conv': (nn.Conv1d, nn.Conv2d, nn.Conv3d), 'conv1d': (nn.Conv1d, ),
    'conv2d': (nn.Conv2d, ), 'conv3d': (nn.Conv3d, )
}
#: torch's normalisation layers, whose affine parameters ``train_norm=True`` unfreezes. Norm modules of other
#: libraries or backbones (InternViT's RMSNorm, ConvNeXt-V2's GRN...) are declared with :func:`register_norm_layer`
#: or passed to :func:`inject_adapters` as ``norm_types`` (backbones: a ``norm_types`` attribute).
NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
                                nn.LocalResponseNorm)
_NORMS: set[type] = set(NORM_TYPES)
# Modules that use their sub-layers' weights without calling them (nn.MultiheadAttention reads out_proj.weight
# directly), so adapting those sub-layers would silently do nothing: they are never searched.
_OPAQUE_TYPES: tuple[type, ...] = (nn.MultiheadAttention, )
# Subclasses of nn.Linear / nn.ConvNd that override forward() but compute the same operator (e.g. wrappers that
# only handle empty tensors on old torch versions); see register_compatible_layer.
_COMPATIBLE: set[type] = set()


def register_compatible_layer(cls: type) -> type:
    """Declare that ``cls`` (a subclass of ``nn.Linear`` / ``nn.ConvNd`` with its own ``forward``) computes the
    standard operator, so it may be adapted. Usable as a decorator."""
    if layer_base_type(cls, strict=False) is None:
        raise TypeError(f'{cls.__name__} is not a subclass of nn.Linear / nn.Conv1d / nn.Conv2d / nn.Conv3d')
    _COMPATIBLE.add(cls)
    return cls


def register_norm_layer(cls: type) -> type:
    """Declare ``cls`` (an ``nn.Module`` with its own affine parameters, e.g. an RMSNorm written as a plain
    module) a normalisation layer, so ``train_norm=True`` unfreezes its parameters. Usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f'register_norm_layer needs an nn.Module subclass, got {cls!r}')
    _NORMS.add(cls)
    return cls


def norm_layer_types() -> tuple[type, ...]:
    """Every class ``train_norm`` treats as a normalisation layer: :data:`NORM_TYPES` and those registered."""
    return tuple(sorted(_NORMS, key=lambda c: (c.__module__, c.__qualname__)))


def layer_base_type(cls: type, strict: bool = True) -> type | None:
    """The standard layer class (``nn.Linear``, ``nn.Conv2d``...) ``cls`` computes, or None if it is not one.

    With ``strict``, a subclass that overrides ``forward`` counts only if registered as compatible.
    """
    for base in cls.__mro__:
        if base in BASE_LAYER_TYPES:
            if not strict or cls is base or cls.forward is base.forward or cls in _COMPATIBLE:
                return base
            return None
    return None


@dataclasses.dataclass
class AdapterState:
    """What :func:`inject_adapters` did to a module (stored as ``module.adapter_state``).

    Attributes:
        config: The validated adapter configuration.
        layers: Qualified names (relative to the module) of the adapted layers.
        extra_trainable: Names of base parameters the config unfroze (BitFit biases, ``train_bias``,
            ``train_norm``); they are part of the adapter's state dict.
        frozen: Names of the base parameters injection froze; they must stay frozen (checked by the
            optimizer constructor and the gradient-check hook of :mod:`flora_mm.engine`).
    """
    config: AdapterConfig
    layers: tuple[str, ...]
    extra_trainable: tuple[str, ...]
    frozen: tuple[str, ...] = ()


#: Module names that wrappers insert into qualified names (FSDP units, activation-checkpoint wrappers,
#: ``torch.compile``); :func:`clean_name` drops them, so names match the unwrapped model's.
WRAPPER_NAMES = frozenset({'_fsdp_wrapped_module', '_checkpoint_wrapped_module', '_orig_mod'})


def clean_name(name: str) -> str:
    """``name`` without the components wrappers insert (``blocks.0._fsdp_wrapped_module.fc`` -> ``blocks.0.fc``)."""
    return '.'.join(part for part in name.split('.') if part not in WRAPPER_NAMES)


def named_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters by clean qualified name (see :func:`clean_name`)."""
    return {clean_name(name): param for name, param in module.named_parameters()}


def _walk(module: nn.Module, prefix: str = '') -> Iterator[tuple[str, nn.Module]]:
    yield prefix, module
    if isinstance(module, _OPAQUE_TYPES):
        return
    for name, child in module.named_children():
        yield from _walk(child, f'{prefix}.{name}' if prefix else name)


def _select(names: list[str], cfg: AdapterConfig, what: str) -> list[str]:
    """Apply include / exclude; every pattern must match at least one of ``names``."""
    for key in ('include', 'exclude'):
        for pattern in getattr(cfg, key):
            if not any(re.search(pattern, n) for n in names):
                sample = ', '.join(names[:8]) + (', ...' if len(names) > 8 else '')
                raise ValueError(f'{cfg.type} adapter: {key} pattern {pattern!r} matches none of the {len(names)} '
                                 f'{what} ({sample})')
    if cfg.include:
        names = [n for n in names if any(re.search(p, n) for p in cfg.include)]
    return [n for n in names if not any(re.search(p, n) for p in cfg.exclude)]


def _is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    setattr(model.get_submodule(parent_name), child, new)


def inject_adapters(model: nn.Module, cfg: Mapping[str, Any] | AdapterConfig, *, respect_frozen: bool = False,
                    keep_trainable: Sequence[str] = (), norm_types: Sequence[type] = ()) -> nn.Module:
    """Adapt the matching layers of ``model`` in place and freeze every base parameter of ``model``: select the
    layers (:func:`_select_layers`), freeze (:func:`_freeze`), replace them by their adapted twins
    (:func:`_replace_layers`), and record what was done as ``model.adapter_state``.

    Args:
        model: Any ``nn.Module`` (typically a backbone). Must not already contain adapters.
        cfg: Adapter config dict (see :class:`AdapterConfig`).
        respect_frozen: Give no adapter (and unfreeze nothing) in layers whose parameters are already frozen,
            e.g. the stages a backbone freezes with ``frozen_stages``.
        keep_trainable: Qualified names of submodules that are new, not pretrained (e.g. a backbone's output
            norms): they get no adapter and their parameters keep their ``requires_grad``.
        norm_types: Module classes ``train_norm`` also counts as normalisation layers (besides
            :func:`norm_layer_types`), e.g. a backbone's own RMSNorm.

    Returns:
        ``model`` (or the adapted layer, if ``model`` itself is a single targeted layer).

    Raises:
        ValueError: bad config, include / exclude patterns that match nothing, no layer to adapt, an option that
            selects nothing (``train_bias`` on layers without a bias, ``train_norm`` on a model without a
            normalisation layer), nothing left to train, or a model that already has adapters.
    """
    cfg = AdapterConfig.from_dict(cfg)
    if any(isinstance(m, AdapterLayer) or hasattr(m, 'adapter_state') for m in model.modules()):
        raise ValueError('the model already contains adapters; merge_adapters() it before injecting again')
    modules = dict(_walk(model))
    unknown = [n for n in keep_trainable if n not in modules]
    if unknown:
        raise ValueError(f'keep_trainable names no submodule of the model: {unknown}')
    kept = {f'{n}.{p}' if n else p for n in keep_trainable for p, _ in modules[n].named_parameters()}
    for n in keep_trainable:  # never adapt inside a kept module
        modules = {m: mod for m, mod in modules.items() if m != n and not m.startswith(f'{n}.')}
    selected = _select_layers(modules, cfg, respect_frozen)
    norms = (*norm_layer_types(), *norm_types)
    extra, frozen = _freeze(model, modules, selected, cfg, respect_frozen, kept, norms)
    layers = tuple(selected) if cfg.method.layers else ()
    model = _replace_layers(model, modules, layers, cfg)
    model.adapter_state = AdapterState(cfg, layers, tuple(dict.fromkeys(extra)), tuple(frozen))
    if not any(p.numel() for p in adapter_parameters(model).values()):
        raise ValueError(f'{cfg.type} adapter: the config trains no parameter ({len(layers)} adapted layers, '
                         f'{len(extra)} unfrozen base tensors)')
    return model


def _select_layers(modules: dict[str, nn.Module], cfg: AdapterConfig, respect_frozen: bool) -> list[str]:
    """Step 1 of injection: the qualified names of the layers the config targets (kind, bias for BitFit, not
    frozen by the backbone if ``respect_frozen``, include / exclude)."""
    if 'all' in cfg.targets:
        candidates = list(modules)
    else:
        kinds = tuple(t for k in cfg.targets for t in _KIND_TYPES[k])
        candidates = [n for n, m in modules.items() if layer_base_type(type(m)) in kinds]
    if cfg.method.trains_bias:
        candidates = [n for n in candidates if isinstance(getattr(modules[n], 'bias', None), nn.Parameter)]
    if respect_frozen:
        candidates = [n for n in candidates if not _is_frozen(modules[n])]
    if not candidates:
        what = 'with a bias ' if cfg.method.trains_bias else ''
        raise ValueError(f'{cfg.type} adapter: the model has no trainable layer {what}of kind {list(cfg.targets)}')
    selected = _select(candidates, cfg, f'{"/".join(cfg.targets)} layers')
    if not selected:
        raise ValueError(f'{cfg.type} adapter: include={list(cfg.include)} / exclude={list(cfg.exclude)} '
                         f'leave no layer to adapt')
    return selected


def _freeze(model: nn.Module, modules: dict[str, nn.Module], selected: list[str], cfg: AdapterConfig,
            respect_frozen: bool, kept: set[str], norms: tuple[type, ...]) -> tuple[list[str], list[str]]:
    """Step 2: freeze every parameter of ``model`` except the ``kept`` ones and those the config trains (BitFit /
    ``train_bias`` biases of the selected layers, ``train_norm`` parameters of the ``norms`` modules); give norms
    with a frozen weight and a trainable bias their exact split form (norms.py). Returns ``(unfrozen base
    parameters, frozen ones)``. ``train_bias`` / ``train_norm`` that would unfreeze nothing are errors."""
    extra = []
    if cfg.method.trains_bias or cfg.train_bias:
        biases = [f'{n}.bias' if n else 'bias' for n in selected
                  if isinstance(getattr(modules[n], 'bias', None), nn.Parameter)]
        if not biases:
            raise ValueError(f'{cfg.type} adapter: train_bias=True, but none of the {len(selected)} selected layers '
                             f'has a bias ({", ".join(selected[:5])}{", ..." if len(selected) > 5 else ""})')
        extra += biases
    if cfg.train_norm:
        found = [(n, m) for n, m in modules.items() if isinstance(m, norms) and not (respect_frozen and _is_frozen(m))]
        params = [f'{n}.{p}' if n else p for n, m in found for p, _ in m.named_parameters(recurse=False)]
        if not params:
            names = ', '.join(sorted({c.__name__ for c in norms}))
            raise ValueError(f'{cfg.type} adapter: train_norm=True, but the model has no {"trainable " * respect_frozen}'
                             f'normalisation layer with parameters (looked for {names}; declare other norm '
                             f'classes with register_norm_layer or a backbone norm_types attribute)')
        extra += params
    extra_set = set(extra)
    frozen = []
    for name, param in model.named_parameters():
        if name not in kept:
            param.requires_grad_(name in extra_set)
            if name not in extra_set:
                frozen.append(name)
    for module in modules.values():
        weight, bias = module._parameters.get('weight'), module._parameters.get('bias')
        if (layer_base_type(type(module), strict=False) is None and weight is not None and bias is not None
                and bias.requires_grad and not weight.requires_grad):
            split_norm_bias(module)
    return extra, frozen


def _replace_layers(model: nn.Module, modules: dict[str, nn.Module], layers: Sequence[str],
                    cfg: AdapterConfig) -> nn.Module:
    """Step 3: swap each layer for its adapted twin (same parameters, same keys). Returns ``model``, or the
    adapted layer if ``model`` itself is the one layer."""
    layer_types = cfg.method.layers
    for name in layers:
        module = modules[name]
        new = layer_types[layer_base_type(type(module))].from_base(module, cfg)
        if name:
            _replace(model, name, new)
        else:
            model = new
    return model


def adapted_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """``(qualified name, layer)`` for every adapted layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield clean_name(name), module


def adapter_states(model: nn.Module) -> Iterator[tuple[str, nn.Module, AdapterState]]:
    """``(clean qualified name, module, its AdapterState)`` for every module of ``model`` that
    :func:`inject_adapters` adapted: the one way to find them (also inside FSDP-wrapped models)."""
    for name, module in model.named_modules():
        state = getattr(module, 'adapter_state', None)
        if isinstance(state, AdapterState):
            yield clean_name(name), module, state


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter the adapter trains, by qualified name: the adapter layers' own parameters and the base
    parameters the config unfroze (BitFit biases, ``train_bias``, ``train_norm``)."""
    out: dict[str, nn.Parameter] = {}
    for name, layer in adapted_layers(model):
        out.update({f'{name}.{k}' if name else k: p for k, p in layer.adapter_parameters().items()})
    for prefix, module, state in adapter_states(model):
        params = named_parameters(module)
        out.update({f'{prefix}.{k}' if prefix else k: params[k] for k in state.extra_trainable})
    return out


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter's tensors (detached), keyed as in ``model.state_dict()``."""
    return {name: p.detach() for name, p in adapter_parameters(model).items()}


class StateDictMismatchError(KeyError):
    """A state dict that does not fit a model. A ``KeyError`` (what torch and mmengine raise for that), but its
    message prints as written, one problem a line (``KeyError`` itself prints the repr of its message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def state_dict_mismatches(expected: Mapping[str, Tensor], given: Mapping[str, Tensor],
                          required: Iterable[str] | None = None, limit: int = 10) -> list[str]:
    """Why ``given`` does not fit ``expected`` (a model's state dict), one line per kind of problem: keys of
    ``required`` (default: all of ``expected``) that ``given`` lacks, keys ``expected`` does not have, and shape
    mismatches -- each with its count and the first ``limit`` names. Empty when ``given`` fits. The one report
    behind every loader of flora_mm (adapter state dicts, pretrained bases, adapter-only checkpoints, tools)."""
    required = set(expected) if required is None else set(required)
    missing = sorted(required - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f'{k}: given {tuple(v.shape)} vs expected {tuple(expected[k].shape)}'
              for k, v in given.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]

    def line(what: str, items: list[str]) -> list[str]:
        more = f' ... ({len(items) - limit} more)' if len(items) > limit else ''
        return [f'{what} ({len(items)}): {items[:limit]}{more}'] if items else []
    return line('missing keys', missing) + line('unexpected keys', unexpected) + line('shape mismatches', shapes)


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load tensors saved by :func:`adapter_state_dict` into a model with the same adapters.

    Raises ``KeyError`` listing missing / unexpected keys and shape mismatches, before modifying anything.
    """
    params = adapter_parameters(model)
    problems = state_dict_mismatches(params, state_dict)
    if problems:
        raise StateDictMismatchError('adapter checkpoint does not fit the model:\n  ' + '\n  '.join(problems))
    for name, param in params.items():
        param.copy_(state_dict[name])


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight; adapted layers become plain ``nn.Linear`` / ``nn.ConvNd``
    (their original class) with the original state_dict keys. Returns ``model`` (or the merged layer if
    ``model`` is itself an adapted layer). Raises ``FloatingPointError`` if a merged weight is not finite and
    ``ValueError`` if an update has no weight form (MPC_n), in which cases nothing has been replaced."""
    layers = list(adapted_layers(model))
    for name, layer in layers:  # an update without a weight form (MPC_n) cannot be merged: say which, touch nothing
        layer.check_mergeable()
    with torch.no_grad():  # check every layer before touching any weight
        for name, layer in layers:
            if not torch.isfinite(layer.merged_weight()).all():
                raise FloatingPointError(f'merging the adapter of {name or type(layer).__name__} gives non-finite '
                                         f'weights; the model was left unchanged')
    for name, layer in layers:
        plain = layer.merge(check=False)  # every merged weight was checked above
        if name:
            _replace(model, name, plain)
        else:
            model = plain
    for module in model.modules():
        remove_split_norm_bias(module)
    for _, module, _ in list(adapter_states(model)):
        del module.adapter_state
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts (works on the meta device): ``adapter`` (what the adapter trains: its own tensors and
    the base tensors it unfroze), ``trainable``, ``total`` and ``base`` (``total`` without the adapter's *new*
    tensors: the model's size before injection, the denominator of "% of backbone")."""
    params = {id(p): p for p in model.parameters()}.values()
    new = {id(p): p for _, layer in adapted_layers(model) for p in layer.adapter_parameters().values()}
    total = sum(p.numel() for p in params)
    return dict(adapter=sum(p.numel() for p in adapter_parameters(model).values()),
                trainable=sum(p.numel() for p in params if p.requires_grad),
                total=total, base=total - sum(p.numel() for p in new.values()))

"""Export a trained adapter for deployment without flora_mm: merge it into the base weights and write a plain
checkpoint with a config that stock mmdet / mmseg / mmrotate tools load.

:func:`merge_checkpoint` folds every adapter into its base weight (adapted layers become their plain
``nn.Conv2d`` / ``nn.Linear`` with the original state-dict keys) and :func:`plain_config` removes what only
flora_mm understands from the config: every ``adapter=`` key, flora_mm's hooks, its optimizer-wrapper
constructor, ``flora_mm://`` pretrained paths (the merged checkpoint holds every weight) and, where nothing of
flora_mm is left, ``flora_mm`` from ``custom_imports``. A model built from flora_mm's own backbones
(``ConvNeXtV2``, ``InternViT``) still needs ``custom_imports=dict(imports=['flora_mm.mm'])`` for those classes; the
returned notes say so.
"""
from __future__ import annotations

import copy

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, Registry, init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader

from ..adapters import AdapterConfig, StateDictMismatchError, merge_adapters, state_dict_mismatches
from .adapter_checkpoint import is_adapter_only, load_adapter_checkpoint
from .launch import config_dicts

__all__ = ['load_model', 'flora_mm_types', 'merge_checkpoint', 'plain_config']

_PACKAGE = 'flora_mm'


def _registries(root: Registry) -> Iterator[Registry]:
    yield root
    for child in root.children.values():
        yield from _registries(child)


def flora_mm_types() -> dict[str, set[str]]:
    """The config ``type`` names flora_mm registers, by kind: ``models``, ``hooks``, ``constructors`` (plain
    names and ``scope.name``), read from the registries."""
    out = {}
    for kind, root in (('models', MODELS), ('hooks', HOOKS), ('constructors', OPTIM_WRAPPER_CONSTRUCTORS)):
        names: set[str] = set()
        for registry in _registries(root):
            for name, cls in registry.module_dict.items():
                if getattr(cls, '__module__', '').split('.')[0] == _PACKAGE:
                    names |= {name, f'{registry.scope}.{name}'}
        out[kind] = names
    return out


def _type_name(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, '__name__', '')


def _drop_adapter_keys(node: Any) -> int:
    """Remove every ``adapter`` key of a dict that builds a module (has a ``type``); returns how many."""
    found = [d for d in config_dicts(node) if 'type' in d and 'adapter' in d]
    for d in found:
        del d['adapter']
    return len(found)


def _uses(node: Any, names: set[str]) -> list[str]:
    """The ``type`` values in ``node`` (recursively) that are among ``names``."""
    return [_type_name(d['type']) for d in config_dicts(node) if _type_name(d.get('type')) in names]


def _drop_flora_pretrained(node: Any) -> None:
    """``init_cfg=dict(type='Pretrained', checkpoint='flora_mm://...')`` -> ``None``: the scheme needs flora_mm,
    and the merged checkpoint already holds those weights."""
    for d in config_dicts(node):
        init = d.get('init_cfg')
        if isinstance(init, dict) and str(init.get('checkpoint', '')).startswith(f'{_PACKAGE}://'):
            d['init_cfg'] = None


#: The config sections a runner builds objects from (other top-level keys are plain values, e.g. a ``_base_``
#: file's variables).
BUILT_SECTIONS = ('model', 'custom_hooks', 'default_hooks', 'optim_wrapper', 'param_scheduler', 'train_dataloader',
                  'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator', 'visualizer',
                  'model_wrapper_cfg', 'strategy', 'train_cfg', 'val_cfg', 'test_cfg')


def plain_config(cfg: Config) -> tuple[Config, list[str]]:
    """A copy of ``cfg`` without anything only flora_mm understands (see the module docstring), and notes on what
    was removed or kept. The model itself is unchanged apart from its ``adapter`` keys."""
    cfg = Config(cfg.to_dict(), filename=cfg.filename)
    data = cfg._cfg_dict.to_dict()
    types = flora_mm_types()
    notes = []
    n = _drop_adapter_keys(data)  # the model's, and any in a _base_ file's variables
    notes.append(f'removed {n} adapter config(s)')
    hooks = data.get('custom_hooks') or []
    kept = [h for h in hooks if _type_name(h.get('type')) not in types['hooks']]
    if len(kept) != len(hooks):
        notes.append(f'removed flora_mm hooks {[_type_name(h["type"]) for h in hooks if h not in kept]}')
        data['custom_hooks'] = kept
    wrapper = data.get('optim_wrapper') or {}
    if _type_name(wrapper.get('constructor')) in types['constructors']:
        notes.append(f'optimizer-wrapper constructor {_type_name(wrapper.pop("constructor"))} -> mmengine default')
    _drop_flora_pretrained(data.get('model', {}))
    built = {k: data[k] for k in BUILT_SECTIONS if k in data}
    needed = sorted(set(_uses(built, types['models'] | types['hooks'] | types['constructors'])))
    imports = data.get('custom_imports')
    if needed:
        notes.append(f'still needs flora_mm for {needed} (flora_mm\'s own classes): custom_imports kept')
    elif imports:
        modules = [m for m in imports.get('imports', []) if m.split('.')[0] != _PACKAGE]
        if modules:
            data['custom_imports'] = dict(imports, imports=modules)
        else:
            del data['custom_imports']
        notes.append('flora_mm removed from custom_imports: stock mm tools load this config without flora_mm')
    return Config(data, filename=cfg.filename), notes


def load_model(cfg: Config, checkpoint: str) -> tuple[torch.nn.Module, dict]:
    """The model of ``cfg`` with the weights of ``checkpoint`` and the loaded checkpoint: a full checkpoint must fit
    the model exactly (:class:`StateDictMismatchError` listing what does not); an adapter-only one is put on the
    config's pretrained base (``init_cfg``, checked against the SHA-256 the adapter recorded). The one "build a model
    and load a checkpoint" of the tools (merge, the demo's picture)."""
    init_default_scope(cfg.get('default_scope'))
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if is_adapter_only(ckpt):
        model = MODELS.build(cfg.model)
        load_adapter_checkpoint(model, ckpt, init_base=True)
        return model, ckpt
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None  # the checkpoint has everything
    model = MODELS.build(cfg.model)
    state = ckpt.get('state_dict', ckpt)
    problems = state_dict_mismatches(model.state_dict(), state)
    if problems:
        raise StateDictMismatchError(f'{checkpoint} does not fit {cfg.filename}:\n  ' + '\n  '.join(problems))
    model.load_state_dict(state)
    return model, ckpt


def merge_checkpoint(config: str, checkpoint: str, out_dir: str) -> tuple[Path, Path, list[str]]:
    """Merge the adapter of ``checkpoint`` (full or adapter-only; an adapter-only one gets its base from the
    config's Pretrained ``init_cfg``, checked against the SHA-256 the adapter recorded) into its base and write
    ``<config stem>_merged.pth`` and ``.py`` to ``out_dir``. Refuses (``FloatingPointError``) before writing if a
    merged weight is not finite; the input checkpoint is only read. Returns the two paths and the config notes."""
    cfg = Config.fromfile(config)
    if not _has_adapter(cfg.model):
        raise ValueError(f'{config} configures no adapter (model...adapter=): nothing to merge')
    model, ckpt = load_model(cfg, checkpoint)
    merge_adapters(model)  # raises FloatingPointError before touching anything if a merged weight is not finite
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(config).stem + '_merged'
    adapter = AdapterConfig.from_dict(cfg.model.backbone.adapter.to_dict()).to_dict()  # plain types only
    meta = dict(ckpt.get('meta', {}))
    meta.pop('flora_mm', None)
    meta['merged_adapter'] = dict(merged_from=str(checkpoint), adapter=adapter)
    ckpt_path = out / f'{name}.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=meta), ckpt_path)
    plain, notes = plain_config(cfg)
    plain.load_from = str(ckpt_path)
    cfg_path = out / f'{name}.py'
    plain.dump(str(cfg_path))
    return ckpt_path, cfg_path, notes


def _has_adapter(node: Any) -> bool:
    return any(d.get('adapter') is not None for d in config_dicts(node))

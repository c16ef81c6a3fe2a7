"""Adapter-only checkpoints: save what training changed, load it back onto the pretrained base, swap adapters.

A parameter-efficient run changes a few MB (adapters, neck and heads, trainable norms), yet mmengine saves the
whole model. :class:`AdapterCheckpointHook` drops the *frozen* parameters from every checkpoint the runner writes
(buffers are kept -- they are small and batch-norm statistics may still move) and records in
``checkpoint['meta']['flora_mm']`` what is needed to rebuild the rest: the adapter config, the pretrained
checkpoints the model's ``init_cfg`` loads (path and SHA-256), and the names of the dropped parameters.

Loading (resume, ``load_from``, ``tools/test.py``, :func:`load_adapter_checkpoint`) checks that the checkpoint
fits the model -- every saved key exists with the same shape and every missing key is one the checkpoint says it
dropped -- and that the model's pretrained base is the one the adapter was trained on, then loads the base from
``init_cfg`` first if the model has not been initialised yet (e.g. in ``runner.test()``).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseModule, is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from ..adapters import adapter_states, state_dict_mismatches

__all__ = ['AdapterCheckpointHook', 'adapter_checkpoint', 'is_adapter_only', 'load_adapter_checkpoint',
           'pretrained_sources', 'unwrap_model']

META_KEY = 'flora_mm'


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside an mmengine model wrapper (DDP, FSDP...), or ``model`` itself: the one place that unwraps."""
    return model.module if is_model_wrapper(model) else model


def _sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _init_cfgs(module: nn.Module) -> Iterator[tuple[str, Mapping]]:
    for name, sub in module.named_modules():
        cfgs = getattr(sub, 'init_cfg', None) if isinstance(sub, BaseModule) else None
        for cfg in cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]:
            if isinstance(cfg, Mapping) and cfg.get('type') == 'Pretrained' and cfg.get('checkpoint'):
                yield name, cfg


def pretrained_sources(model: nn.Module) -> list[dict[str, Any]]:
    """The pretrained checkpoints the model's ``init_cfg`` loads: ``[{module, checkpoint, sha256}]``
    (``sha256`` is ``None`` for a non-local path such as a URL)."""
    out = []
    for name, cfg in _init_cfgs(unwrap_model(model)):
        path = Path(str(cfg['checkpoint']))
        out.append(dict(module=name, checkpoint=str(cfg['checkpoint']),
                        sha256=_sha256(path) if path.is_file() else None))
    return out


def _frozen_parameters(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not p.requires_grad]


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def adapter_checkpoint(model: nn.Module, checkpoint: dict, base: list[dict] | None = None) -> dict:
    """Turn a full mmengine checkpoint dict of ``model`` into an adapter-only one, in place: frozen parameters
    are dropped from ``state_dict`` and ``meta['flora_mm']`` records the adapter config, the pretrained ``base``
    (see :func:`pretrained_sources`) and the dropped keys. Returns the metadata (with the sizes in bytes)."""
    model = unwrap_model(model)
    state = checkpoint['state_dict']
    frozen = [k for k in _frozen_parameters(model) if k in state]
    full_bytes = _nbytes(state.values())
    for key in frozen:
        del state[key]
    adapters = {name: state.config.to_dict() for name, _, state in adapter_states(model)}
    meta = dict(adapter_only=True, adapters=adapters,
                base=base if base is not None else pretrained_sources(model), frozen_keys=frozen,
                state_bytes=_nbytes(state.values()), full_state_bytes=full_bytes)
    checkpoint.setdefault('meta', {})[META_KEY] = meta
    return meta


def is_adapter_only(checkpoint: Mapping) -> bool:
    return bool(checkpoint.get('meta', {}).get(META_KEY, {}).get('adapter_only', False))


def _check_fits(model: nn.Module, checkpoint: Mapping, check_base: bool) -> None:
    meta = checkpoint['meta'][META_KEY]
    state = checkpoint['state_dict']
    model_state = model.state_dict()
    # every key must be saved except the frozen base weights the checkpoint says it left out
    problems = state_dict_mismatches(model_state, state, required=set(model_state) - set(meta['frozen_keys']))
    if check_base:
        saved = {s['module']: s['sha256'] for s in meta['base']}
        if not saved:
            problems.append('the checkpoint records no pretrained base (its model had no Pretrained init_cfg)')
        current = {s['module']: s for s in pretrained_sources(model)}
        for module, sha in saved.items():
            now = current.get(module)
            if now is None:
                problems.append(f'{module or "model"}: trained on a pretrained base, but this model has no '
                                f'Pretrained init_cfg there')
            elif sha is not None and now['sha256'] != sha:
                problems.append(f'{module or "model"}: base checkpoint {now["checkpoint"]} (sha256 '
                                f'{now["sha256"]}) is not the one the adapter was trained on (sha256 {sha})')
    if problems:
        raise KeyError('adapter-only checkpoint does not fit the model:\n  ' + '\n  '.join(problems))


def load_adapter_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping, *, check_base: bool = True,
                            init_base: bool | None = None) -> dict:
    """Load an adapter-only checkpoint into ``model`` (swapping whatever adapter and heads it had).

    Args:
        model: The model the checkpoint was trained with (same config; possibly wrapped).
        checkpoint: A path or an already loaded checkpoint dict.
        check_base: Require the model's ``Pretrained`` init checkpoints to be the files (by SHA-256) the
            adapter was trained on.
        init_base: Run ``model.init_weights()`` (loads the pretrained base) before loading; ``None`` does it
            only if the model has not been initialised yet.

    Raises ``KeyError`` listing every mismatch before anything is modified. Returns the checkpoint's metadata.
    """
    model = unwrap_model(model)
    if not isinstance(checkpoint, Mapping):
        checkpoint = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')
    if not is_adapter_only(checkpoint):
        raise ValueError('not an adapter-only checkpoint (no meta.flora_mm.adapter_only); load full checkpoints '
                         'with load_from / load_checkpoint')
    _check_fits(model, checkpoint, check_base)
    if init_base or (init_base is None and not getattr(model, 'is_init', True)):
        model.init_weights()
    with torch.no_grad():
        model.load_state_dict(checkpoint['state_dict'], strict=False)
    return checkpoint['meta'][META_KEY]


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Makes the runner's checkpoints adapter-only and loads such checkpoints safely.

    * ``before_save_checkpoint``: drops frozen parameters, adds ``meta['flora_mm']`` (adapter configs, pretrained
      base path + SHA-256, dropped keys) and logs the size against the full checkpoint. Without a pretrained
      base in the model's ``init_cfg`` (e.g. a randomly initialised backbone) the frozen weights could not be
      rebuilt, so full checkpoints are saved and a warning says why.
    * ``after_load_checkpoint`` (resume, ``load_from``, ``tools/test.py``): checks an adapter-only checkpoint
      against the model (keys, shapes, base checkpoint hash) and initialises the pretrained base first if the
      runner has not (test / val); mmengine then loads the saved tensors non-strictly.

    ``tools/train.py`` and ``tools/test.py`` add ``AdapterCheckpointHook(save=False)`` to configs without this
    hook, so an adapter-only checkpoint is never loaded onto an uninitialised base.

    Args:
        save: Save adapter-only checkpoints (``False``: only check and prepare loading).
        check_base: Refuse checkpoints trained on a different pretrained base file.
    """

    priority = 'NORMAL'

    def __init__(self, save: bool = True, check_base: bool = True) -> None:
        self.save = save
        self.check_base = check_base
        self._base: list[dict] | None = None
        self._reported = False

    def _sources(self, runner) -> list[dict]:
        if self._base is None:
            self._base = pretrained_sources(runner.model)
        return self._base

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.save:
            return
        base = self._sources(runner)
        if not base:
            if not self._reported:
                print_log('AdapterCheckpointHook: the model loads no Pretrained init_cfg, so its frozen weights '
                          'could not be rebuilt from an adapter-only checkpoint; saving full checkpoints',
                          logger='current', level=logging.WARNING)
                self._reported = True
            return
        meta = adapter_checkpoint(runner.model, checkpoint, base)
        if not self._reported:
            saved, full = meta['state_bytes'], meta['full_state_bytes']
            print_log(f'AdapterCheckpointHook: adapter-only checkpoints hold {saved / 2**20:.2f} MB of model '
                      f'tensors instead of {full / 2**20:.2f} MB ({100 * saved / max(full, 1):.1f}%); '
                      f'{len(meta["frozen_keys"])} frozen parameters come from '
                      f'{", ".join(s["checkpoint"] for s in base)}', logger='current')
            self._reported = True

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not is_adapter_only(checkpoint):
            return
        model = unwrap_model(runner.model)
        _check_fits(model, checkpoint, self.check_base)
        if not getattr(model, 'is_init', True):
            model.init_weights()

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

import logging
from collections import OrderedDict
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

from ..adapters import StateDictMismatchError, adapter_states, state_dict_mismatches
from ..models.checkpoint import BASE_METADATA_KEY, base_identity, pretrained_init_cfgs

__all__ = ['OVERRIDE', 'AdapterCheckpointHook', 'adapter_checkpoint', 'is_adapter_only', 'load_adapter_checkpoint',
           'pretrained_sources', 'unwrap_model']

META_KEY = 'flora_mm'


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside an mmengine model wrapper (DDP, FSDP...), or ``model`` itself: the one place that unwraps."""
    return model.module if is_model_wrapper(model) else model


def _init_cfgs(module: nn.Module) -> Iterator[tuple[str, Mapping]]:
    for name, sub in module.named_modules():
        if isinstance(sub, BaseModule):
            yield from ((name, cfg) for cfg in pretrained_init_cfgs(sub))


def pretrained_sources(model: nn.Module) -> list[dict[str, Any]]:
    """The pretrained checkpoints the model's ``init_cfg`` loads: ``[{module, checkpoint, sha256}]``, ``sha256``
    being the identity of the file actually read (:func:`~flora_mm.models.checkpoint.base_identity`: local files,
    ``flora_mm://`` weights and downloaded URLs alike), ``None`` where that file is not known."""
    return [dict(module=name, checkpoint=str(cfg['checkpoint']), sha256=base_identity(str(cfg['checkpoint'])))
            for name, cfg in _init_cfgs(unwrap_model(model))]


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
    base = base if base is not None else pretrained_sources(model)
    meta = dict(adapter_only=True, adapters=adapters, base=base, frozen_keys=frozen,
                state_bytes=_nbytes(state.values()), full_state_bytes=full_bytes)
    # The same identities inside the state dict's own metadata, which torch.load and mmengine's loader hand to each
    # module's load_state_dict pre-hooks: the adapted backbone checks them where stock tools load the checkpoint.
    if not isinstance(state, OrderedDict):  # a plain dict takes no attribute (model.state_dict() is an OrderedDict)
        state = checkpoint['state_dict'] = OrderedDict(state)
    metadata = getattr(state, '_metadata', None)
    if metadata is None:
        metadata = state._metadata = OrderedDict()
    for name in adapters:
        own = [dict(checkpoint=b['checkpoint'], sha256=b['sha256']) for b in base if b['module'] == name]
        metadata[name] = {**metadata.get(name, {}), BASE_METADATA_KEY: own}
    checkpoint.setdefault('meta', {})[META_KEY] = meta
    return meta


def is_adapter_only(checkpoint: Mapping) -> bool:
    return bool(checkpoint.get('meta', {}).get(META_KEY, {}).get('adapter_only', False))


#: How to load an adapter onto a base whose identity differs or was not recorded, for people who mean it.
OVERRIDE = ('load_adapter_checkpoint(..., check_base=False), AdapterCheckpointHook(check_base=False) or '
            'tools/test.py --skip-base-check')


def _check_fits(model: nn.Module, checkpoint: Mapping) -> None:
    """Every key fits (saved keys exist with their shapes; every missing key is a frozen one the checkpoint says it
    dropped); raises :class:`StateDictMismatchError` listing every problem."""
    meta = checkpoint['meta'][META_KEY]
    model_state = model.state_dict()
    problems = state_dict_mismatches(model_state, checkpoint['state_dict'],
                                     required=set(model_state) - set(meta['frozen_keys']))
    if problems:
        raise StateDictMismatchError('adapter-only checkpoint does not fit the model:\n  ' + '\n  '.join(problems))


def _check_base(model: nn.Module, checkpoint: Mapping, defer_unknown: bool = False) -> bool:
    """The model's pretrained base is, file for file (SHA-256), the one the adapter was trained on; raises
    ``ValueError`` naming both otherwise, also when either identity is unknown. With ``defer_unknown``, a base of
    the model whose file is not known yet (a URL not downloaded before ``init_weights``) is not judged; returns
    whether such a base was left for a second call."""
    saved = checkpoint['meta'][META_KEY]['base']
    problems = []
    if not saved:
        problems.append('the checkpoint records no pretrained base (its model had no Pretrained init_cfg)')
    current = {s['module']: s for s in pretrained_sources(model)}
    deferred = False
    for source in saved:
        where, sha = source['module'] or 'model', source['sha256']
        now = current.get(source['module'])
        if now is None:
            problems.append(f'{where}: trained on the pretrained base {source["checkpoint"]}, but this model has no '
                            f'Pretrained init_cfg there')
        elif sha is None:
            problems.append(f'{where}: the checkpoint does not record which file its base {source["checkpoint"]} '
                            f'was (no SHA-256), so it cannot be checked against this model\'s base '
                            f'{now["checkpoint"]} (sha256 {now["sha256"]})')
        elif now['sha256'] is None and defer_unknown:
            deferred = True
        elif now['sha256'] != sha:
            known = 'an unknown file (not found locally)' if now['sha256'] is None else f'sha256 {now["sha256"]}'
            problems.append(f'{where}: this model\'s base {now["checkpoint"]} ({known}) is not the base the adapter '
                            f'was trained on, {source["checkpoint"]} (sha256 {sha})')
    if problems:
        raise ValueError('refusing to load the adapter-only checkpoint onto this base:\n  ' + '\n  '.join(problems)
                         + f'\nTo load it anyway, use {OVERRIDE}.')
    return deferred


def _prepare_base(model: nn.Module, checkpoint: Mapping, check_base: bool, init_base: bool | None = None) -> None:
    """Everything before an adapter-only checkpoint's tensors load: its keys fit the model, its base is the model's
    (unless ``check_base`` is off) -- judged before anything is modified, except a base whose file is only known once
    ``init_weights`` has downloaded it -- and the base is initialised (``init_base``; ``None``: if not yet)."""
    _check_fits(model, checkpoint)
    deferred = check_base and _check_base(model, checkpoint, defer_unknown=True)
    if init_base or (init_base is None and not getattr(model, 'is_init', True)):
        model.init_weights()
    if deferred:  # a URL base is downloaded by init_weights: its file is known now
        _check_base(model, checkpoint)


def load_adapter_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping, *, check_base: bool = True,
                            init_base: bool | None = None) -> dict:
    """Load an adapter-only checkpoint into ``model`` (swapping whatever adapter and heads it had).

    Args:
        model: The model the checkpoint was trained with (same config; possibly wrapped).
        checkpoint: A path or an already loaded checkpoint dict.
        check_base: Require the model's ``Pretrained`` init checkpoints to be the files (by SHA-256) the
            adapter was trained on; refused where either identity is unknown. ``False`` skips the check.
        init_base: Run ``model.init_weights()`` (loads the pretrained base) before loading; ``None`` does it
            only if the model has not been initialised yet.

    Raises ``KeyError`` listing every key mismatch and ``ValueError`` naming both bases if the base differs or
    cannot be checked, before the model is modified (a URL base not downloaded yet: after ``init_weights``, before
    any tensor of the checkpoint is loaded). Returns the checkpoint's metadata.
    """
    model = unwrap_model(model)
    if not isinstance(checkpoint, Mapping):
        checkpoint = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')
    if not is_adapter_only(checkpoint):
        raise ValueError('not an adapter-only checkpoint (no meta.flora_mm.adapter_only); load full checkpoints '
                         'with load_from / load_checkpoint')
    _prepare_base(model, checkpoint, check_base, init_base)
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
        check_base: Refuse adapter-only checkpoints trained on a different pretrained base file, or whose base
            identity (SHA-256) is not recorded. ``False`` is the explicit override.
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
            unknown = [b['checkpoint'] for b in base if b['sha256'] is None]
            if unknown:
                print_log(f'AdapterCheckpointHook: the file behind the pretrained base {unknown} is not known '
                          f'locally, so its SHA-256 is not recorded: loading these adapter-only checkpoints will be '
                          f'refused unless the base check is skipped ({OVERRIDE})', logger='current',
                          level=logging.WARNING)
            saved, full = meta['state_bytes'], meta['full_state_bytes']
            print_log(f'AdapterCheckpointHook: adapter-only checkpoints hold {saved / 2**20:.2f} MB of model '
                      f'tensors instead of {full / 2**20:.2f} MB ({100 * saved / max(full, 1):.1f}%); '
                      f'{len(meta["frozen_keys"])} frozen parameters come from '
                      f'{", ".join(s["checkpoint"] for s in base)}', logger='current')
            self._reported = True

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not is_adapter_only(checkpoint):
            return
        _prepare_base(unwrap_model(runner.model), checkpoint, self.check_base)

"""Fixes for running the pinned OpenMMLab stack (mmengine 0.10.7, mmcv 2.1) on a modern torch.

Each fix names the upstream behaviour it works around and the versions it is for (:data:`FIXES`); they are applied
once, by :mod:`flora_mm.mm` (the OpenMMLab entry), never on ``import flora_mm``.
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle
import re

import numpy as np
import torch

__all__ = ['APPLIED', 'CHECKPOINT_SAFE_GLOBALS', 'FIXES', 'UnreadableCheckpointError', 'apply', 'unreadable_checkpoint']


def _numpy_pickle_globals() -> list:
    # What pickle needs to rebuild numpy arrays / scalars / dtypes (numpy 2 moved numpy.core to numpy._core).
    multiarray = np._core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                                 np.int16, np.int8, np.uint8, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


# HistoryBuffer registers these in _statistics_methods only when a first instance is created, which a fresh
# process that just loads a checkpoint has not done yet.
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def _mmengine_pickle_globals() -> list:
    from mmengine.logging import HistoryBuffer

    def history_buffer_getattr(obj, name):
        # HistoryBuffer.__getstate__ stores its statistics methods (HistoryBuffer.min, .max, ...), which pickle
        # writes as ``getattr(HistoryBuffer, 'min')``. Only that lookup is honoured, never a general getattr.
        if obj is HistoryBuffer and name in {*_BUILTIN_STATISTICS, *HistoryBuffer._statistics_methods}:
            return getattr(obj, name)
        raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint')

    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'),
            (history_buffer_getattr, '__builtin__.getattr')]


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (empty, truncated, corrupt, not a checkpoint, or holding objects that
    are not allowed): the message names the file and the cause."""


def _is_read_error(err: BaseException) -> bool:
    # what torch.load raises for bytes it cannot read (not for, say, a CUDA tensor on a CPU-only machine)
    return isinstance(err, (pickle.UnpicklingError, EOFError)) or (
        isinstance(err, RuntimeError) and any(s in str(err) for s in ('PytorchStreamReader', 'zip archive')))


def unreadable_checkpoint(filename: str, err: BaseException) -> UnreadableCheckpointError:
    """The error to raise for ``err`` from reading ``filename``: names the file, its size and the cause in one
    paragraph, without torch's advice to retry with ``weights_only=False`` (which would run arbitrary code from a
    file that already failed to load as a checkpoint)."""
    size = os.path.getsize(filename) if os.path.isfile(filename) else None
    text = str(err).strip()
    if 'WeightsUnpickler error:' in text:  # torch's weights-only refusal: keep its reason, drop its advice
        reason = text.split('WeightsUnpickler error:', 1)[1].strip().splitlines()[0].strip()
        text = f'torch\'s safe (weights-only) unpickler refused it: {reason}'
    elif isinstance(err, EOFError) or not text:
        text = 'the file is empty' if size == 0 else 'the file ends early (truncated)'
    else:
        text = text.splitlines()[0]
    return UnreadableCheckpointError(
        f'cannot read checkpoint {filename} ({"?" if size is None else f"{size:,}"} bytes): {text}. It is corrupt, '
        f'truncated or not a PyTorch checkpoint: download or save it again')


#: Exactly the non-tensor objects an mmengine checkpoint contains (message_hub's HistoryBuffer of numpy arrays
#: and its statistics methods, numpy scalars in runtime info / meta), and the ``argparse.Namespace`` of the
#: command-line arguments that the official ConvNeXt-V2 (and DeiT / MAE-style) training scripts save as
#: ``checkpoint['args']``.
CHECKPOINT_SAFE_GLOBALS: list = []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r'\d+', text)[:3])


def _mmengine_version() -> tuple[int, ...]:
    import mmengine
    return _version(mmengine.__version__)


def _add_checkpoint_safe_globals() -> None:
    CHECKPOINT_SAFE_GLOBALS.extend(_numpy_pickle_globals() + _mmengine_pickle_globals() + [argparse.Namespace])
    torch.serialization.add_safe_globals(CHECKPOINT_SAFE_GLOBALS)


def _mmengine_0_10() -> bool:
    return _mmengine_version()[:2] == (0, 10)


#: The fixes: (name, the versions it is for, guard, fix). A fix is applied only while its guard holds for the
#: installed versions; a newer mmengine that changed the behaviour gets none of them (and :data:`APPLIED` says so).
FIXES = (
    ('checkpoint_safe_globals', 'torch >= 2.6 (torch.load weights_only=True) with mmengine 0.10.x',
     lambda: _version(torch.__version__) >= (2, 6) and _mmengine_0_10(), lambda: _add_checkpoint_safe_globals()),
    ('cpu_distributed_init', 'mmengine 0.10.x (_init_dist_pytorch always calls torch.cuda.set_device)',
     _mmengine_0_10, lambda: _patch_cpu_distributed_init()),
    ('fsdp_optim_state_loading', 'mmengine 0.10.x with torch >= 2.1 (optim_state_dict_to_load argument order)',
     lambda: _mmengine_0_10() and _version(torch.__version__) >= (2, 1), lambda: _patch_fsdp_optim_state_loading()),
    ('local_checkpoint_errors', 'mmengine 0.10.x (local checkpoint read errors name no file)',
     _mmengine_0_10, lambda: _patch_local_checkpoint_errors()),
)
#: The names of the fixes :func:`apply` applied in this process.
APPLIED: list[str] = []
_DONE: list[bool] = []


def apply() -> None:
    """Apply the compatibility fixes whose version guard holds (idempotent; :data:`FIXES`, :data:`APPLIED`).

    * torch >= 2.6 defaults to ``torch.load(weights_only=True)``; mmengine 0.10.7's ``CheckpointLoader`` calls
      ``torch.load`` without ``weights_only``, so resuming fails on the ``HistoryBuffer`` / numpy objects that
      mmengine itself stored in ``message_hub``. Rather than switching ``weights_only`` off (arbitrary code
      execution on untrusted files), exactly those types are allow-listed with
      ``torch.serialization.add_safe_globals``; so is ``argparse.Namespace``, which the official ConvNeXt-V2
      training script stores in its checkpoints (``{'model', 'epoch', 'args', ...}``). Any other object stays
      refused.
    * mmengine 0.10.7's ``_init_dist_pytorch`` calls ``torch.cuda.set_device(local_rank)`` unconditionally, so a
      ``torchrun`` job on a machine without GPUs (gloo backend) dies before training. Without CUDA the process
      group is initialised directly; with CUDA mmengine's own function runs unchanged.
    * mmengine 0.10.7's local-file loader (``CheckpointLoader`` scheme ``''``) passes torch's errors on: an empty
      file gives a bare ``EOFError`` naming no file, a corrupt one torch's advice to retry with
      ``weights_only=False``. The same loader runs, and a read error is re-raised as
      :class:`UnreadableCheckpointError` naming the file and the cause (:func:`unreadable_checkpoint`).
    * mmengine 0.10.7's ``FSDPStrategy.load_optim_state_dict`` calls ``FSDP.optim_state_dict_to_load(state_dict,
      model, optimizer)`` in torch 2.0's argument order; torch >= 2.1 takes ``(model, optim, optim_state_dict)``,
      so resuming an FSDP run fails (``unhashable type: 'dict'``). The same call is made with keywords.
    """
    if _DONE:
        return
    _DONE.append(True)
    for name, _, guard, fix in FIXES:
        if guard():
            fix()
            APPLIED.append(name)


def _patch_cpu_distributed_init() -> None:
    from mmengine.dist import utils as dist_utils
    original = dist_utils._init_dist_pytorch

    @functools.wraps(original)
    def init_dist_pytorch(backend: str, init_backend: str = 'torch', **kwargs) -> None:
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                             world_size=int(os.environ['WORLD_SIZE']), **kwargs)

    dist_utils._init_dist_pytorch = init_dist_pytorch


def _patch_fsdp_optim_state_loading() -> None:
    from mmengine._strategy import fsdp

    def load_optim_state_dict(self, state_dict: dict) -> None:
        optim_state_dict = fsdp.FSDP.optim_state_dict_to_load(model=self.model, optim=self.optim_wrapper.optimizer,
                                                              optim_state_dict=state_dict)
        self.optim_wrapper.load_state_dict(optim_state_dict)

    load_optim_state_dict.__doc__ = fsdp.FSDPStrategy.load_optim_state_dict.__doc__
    fsdp.FSDPStrategy.load_optim_state_dict = load_optim_state_dict


def _patch_local_checkpoint_errors() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    original = CheckpointLoader._schemes['']

    @functools.wraps(original)
    def load_from_local(filename, map_location=None):
        try:
            return original(filename, map_location)
        except Exception as err:  # noqa: BLE001  (only read errors are translated, see _is_read_error)
            if _is_read_error(err):
                raise unreadable_checkpoint(os.path.expanduser(filename), err) from None
            raise

    CheckpointLoader._schemes[''] = load_from_local

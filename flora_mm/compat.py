"""Fixes for running the pinned OpenMMLab stack (mmengine 0.10.7, mmcv 2.1) on a modern torch.

Each fix names the upstream behaviour it works around. Applied once, on ``import flora_mm``.
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle

import numpy as np
import torch

__all__ = ['CHECKPOINT_SAFE_GLOBALS', 'apply']


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


#: Exactly the non-tensor objects an mmengine checkpoint contains (message_hub's HistoryBuffer of numpy arrays
#: and its statistics methods, numpy scalars in runtime info / meta), and the ``argparse.Namespace`` of the
#: command-line arguments that the official ConvNeXt-V2 (and DeiT / MAE-style) training scripts save as
#: ``checkpoint['args']``.
CHECKPOINT_SAFE_GLOBALS: list = []


def apply() -> None:
    """Apply every compatibility fix (idempotent).

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
    * mmengine 0.10.7's ``FSDPStrategy.load_optim_state_dict`` calls ``FSDP.optim_state_dict_to_load(state_dict,
      model, optimizer)`` in torch 2.0's argument order; torch >= 2.1 takes ``(model, optim, optim_state_dict)``,
      so resuming an FSDP run fails (``unhashable type: 'dict'``). The same call is made with keywords.
    """
    if CHECKPOINT_SAFE_GLOBALS:
        return
    CHECKPOINT_SAFE_GLOBALS.extend(_numpy_pickle_globals() + _mmengine_pickle_globals() + [argparse.Namespace])
    torch.serialization.add_safe_globals(CHECKPOINT_SAFE_GLOBALS)
    _patch_cpu_distributed_init()
    _patch_fsdp_optim_state_loading()


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

"""FSDP auto-wrap policy for flora_mm's transformer backbones (mmengine ``FSDPStrategy``).

Each transformer block becomes its own FSDP unit (sharded, gathered just for its forward / backward); everything
else -- patch embedding, pyramid, neck, heads -- stays in the root unit. Wrapping heads by size, as
``size_based_auto_wrap_policy`` does, breaks OpenMMLab models: segmentors and detectors call their heads through
methods other than ``forward`` (mmseg's ``decode_head.loss``, mmdet's ``roi_head.loss``), and an FSDP unit gathers
its parameters only in ``forward``, so the head then runs on the flat shards ("weight should have at least three
dimensions"). Blocks are always called through ``forward``.

Use in a config::

    strategy = dict(type='FSDPStrategy', model_wrapper=dict(
        auto_wrap_policy=dict(type='flora_mm.engine.fsdp.block_wrap_policy'), use_orig_params=True))

``use_orig_params=True`` keeps frozen base weights and trainable adapters in the same unit possible (a flat
parameter otherwise needs one ``requires_grad`` for all its tensors).
"""
from __future__ import annotations

from torch import nn
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

from ..models.internvit import Block

__all__ = ['BLOCK_TYPES', 'block_wrap_policy']

#: Module classes that become FSDP units.
BLOCK_TYPES: tuple[type[nn.Module], ...] = (Block, )


def block_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """``auto_wrap_policy`` for FSDP: wrap every module of :data:`BLOCK_TYPES`, nothing else."""
    return transformer_auto_wrap_policy(module, recurse, nonwrapped_numel, transformer_layer_cls=set(BLOCK_TYPES))

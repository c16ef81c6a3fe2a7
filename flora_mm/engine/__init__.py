"""mmengine integration: the adapter optimizer-wrapper constructor, training hooks and adapter-only checkpoints."""
from .adapter_checkpoint import (AdapterCheckpointHook, adapter_checkpoint, is_adapter_only, load_adapter_checkpoint,
                                 pretrained_sources, unwrap_model)
from .hooks import DeltaWeightStatsHook, FiniteLossHook, FrozenParamsCheckHook, OptunaPruningHook, delta_stats
from .logs import read_scalars, scalar_curve
from .optim_constructor import AdapterOptimWrapperConstructor, check_frozen, parameter_summary

__all__ = ['AdapterCheckpointHook', 'AdapterOptimWrapperConstructor', 'DeltaWeightStatsHook', 'FiniteLossHook',
           'FrozenParamsCheckHook', 'OptunaPruningHook', 'adapter_checkpoint', 'check_frozen', 'delta_stats', 'is_adapter_only', 'load_adapter_checkpoint',
           'parameter_summary', 'pretrained_sources', 'read_scalars', 'scalar_curve', 'unwrap_model']

from .. import mm as _mm  # noqa: E402  (flora_mm's OpenMMLab parts need the integration enabled)

_mm.enable()

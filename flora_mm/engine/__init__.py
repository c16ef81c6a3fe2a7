"""mmengine integration: the adapter optimizer-wrapper constructor and training hooks."""
from .hooks import DeltaWeightStatsHook, FrozenParamsCheckHook, delta_stats
from .optim_constructor import AdapterOptimWrapperConstructor, check_frozen, parameter_summary

__all__ = ['AdapterOptimWrapperConstructor', 'DeltaWeightStatsHook', 'FrozenParamsCheckHook', 'delta_stats', 'check_frozen', 'parameter_summary']

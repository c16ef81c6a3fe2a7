"""mmengine integration: the adapter optimizer-wrapper constructor and training hooks."""
from .hooks import FrozenParamsCheckHook
from .optim_constructor import AdapterOptimWrapperConstructor, check_frozen, parameter_summary

__all__ = ['AdapterOptimWrapperConstructor', 'FrozenParamsCheckHook', 'check_frozen', 'parameter_summary']

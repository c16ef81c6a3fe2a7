"""Adapter layers and their injection: plain PyTorch, no OpenMMLab imports.

Public API: :func:`inject_adapters`, :func:`merge_adapters`, :func:`adapter_state_dict`,
:func:`load_adapter_state_dict`, :func:`count_parameters`, and the layer classes.
"""
from . import routes
from .base import AdapterLayer
from .config import IMPLS, LAYER_KINDS, AdapterConfig
from .flora import FLoRAConv1d, FLoRAConv2d, FLoRAConv3d, FLoRALayer, FLoRALinear, tucker_merged, tucker_product
from .inject import (BASE_LAYER_TYPES, NORM_TYPES, AdapterState, StateDictMismatchError, adapted_layers, adapter_parameters,
                     adapter_state_dict, adapter_states, count_parameters, inject_adapters, layer_base_type,
                     load_adapter_state_dict, merge_adapters, norm_layer_types, register_compatible_layer,
                     register_norm_layer, state_dict_mismatches)
from .lora import (DoRAConv1d, DoRAConv2d, DoRAConv3d, DoRALayer, DoRALinear, LoRAConv1d, LoRAConv2d, LoRAConv3d,
                   LoRALayer, LoRALinear, lora_matrix_shape)
from .methods import METHODS, Method, register_method
from .norms import split_norm_bias

__all__ = [
    'BASE_LAYER_TYPES', 'IMPLS', 'LAYER_KINDS', 'METHODS', 'NORM_TYPES', 'AdapterConfig', 'AdapterLayer',
    'AdapterState', 'Method', 'StateDictMismatchError',
    'DoRAConv1d', 'DoRAConv2d', 'DoRAConv3d', 'DoRALayer', 'DoRALinear', 'FLoRAConv1d', 'FLoRAConv2d',
    'FLoRAConv3d', 'FLoRALayer', 'FLoRALinear', 'LoRAConv1d', 'LoRAConv2d', 'LoRAConv3d', 'LoRALayer',
    'LoRALinear', 'adapted_layers', 'adapter_parameters', 'adapter_state_dict', 'adapter_states', 'count_parameters',
    'inject_adapters', 'layer_base_type', 'load_adapter_state_dict', 'lora_matrix_shape', 'merge_adapters',
    'norm_layer_types', 'register_compatible_layer', 'register_norm_layer', 'register_method', 'routes', 'split_norm_bias', 'state_dict_mismatches',
    'tucker_merged',
    'tucker_product'
]

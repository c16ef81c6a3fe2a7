"""Adapter layers and their injection: plain PyTorch, no OpenMMLab imports.

Public API: :func:`inject_adapters`, :func:`merge_adapters`, :func:`adapter_state_dict`,
:func:`load_adapter_state_dict`, :func:`count_parameters`, :func:`mpc_loss`, the layer classes and the method
registry (:data:`METHODS`: FLoRA, LoRA, DoRA, TriLoRA, IA3, SSL, SSB, BitFit).
"""
from . import routes
from .base import AdapterLayer
from .config import LAYER_KINDS, ROUTE_OPTIONS, AdapterConfig
from .flora import FLoRAConv1d, FLoRAConv2d, FLoRAConv3d, FLoRALayer, FLoRALinear, tucker_merged, tucker_product
from .inject import (BASE_LAYER_TYPES, NORM_TYPES, AdapterState, StateDictMismatchError, adapted_layers,
                     adapter_parameters, adapter_state_dict, adapter_states, count_parameters, inject_adapters,
                     layer_base_type, load_adapter_state_dict, merge_adapters, norm_layer_types,
                     register_compatible_layer, register_norm_layer, state_dict_mismatches)
from .lora import (DoRAConv1d, DoRAConv2d, DoRAConv3d, DoRALinear, LoRAConv1d, LoRAConv2d, LoRAConv3d, LoRALayer,
                   LoRALinear, TriLoRAConv1d, TriLoRAConv2d, TriLoRAConv3d, TriLoRALayer, TriLoRALinear,
                   lora_matrix_shape)
from .lowrank import LowRankLayer, mpc_layers, mpc_loss, mpc_penalty
from .methods import METHODS, FLoRAOptions, LowRankOptions, Method, NoOptions, register_method
from .norms import split_norm_bias
from .scaling import (IA3Conv1d, IA3Conv2d, IA3Conv3d, IA3Linear, ScalingLayer, SSBConv1d, SSBConv2d, SSBConv3d,
                      SSBLinear, SSLConv1d, SSLConv2d, SSLConv3d, SSLLinear)

__all__ = [
    'BASE_LAYER_TYPES', 'LAYER_KINDS', 'ROUTE_OPTIONS', 'METHODS', 'NORM_TYPES', 'AdapterConfig', 'AdapterLayer',
    'AdapterState', 'FLoRAOptions', 'LowRankLayer', 'LowRankOptions', 'Method', 'NoOptions', 'ScalingLayer',
    'StateDictMismatchError',
    'DoRAConv1d', 'DoRAConv2d', 'DoRAConv3d', 'DoRALinear', 'FLoRAConv1d', 'FLoRAConv2d', 'FLoRAConv3d',
    'FLoRALayer', 'FLoRALinear', 'IA3Conv1d', 'IA3Conv2d', 'IA3Conv3d', 'IA3Linear', 'LoRAConv1d', 'LoRAConv2d',
    'LoRAConv3d', 'LoRALayer', 'LoRALinear', 'SSBConv1d', 'SSBConv2d', 'SSBConv3d', 'SSBLinear', 'SSLConv1d',
    'SSLConv2d', 'SSLConv3d', 'SSLLinear', 'TriLoRAConv1d', 'TriLoRAConv2d', 'TriLoRAConv3d', 'TriLoRALayer',
    'TriLoRALinear',
    'adapted_layers', 'adapter_parameters', 'adapter_state_dict', 'adapter_states', 'count_parameters',
    'inject_adapters', 'layer_base_type', 'load_adapter_state_dict', 'lora_matrix_shape', 'merge_adapters',
    'mpc_layers', 'mpc_loss', 'mpc_penalty', 'norm_layer_types', 'register_compatible_layer', 'register_method',
    'register_norm_layer', 'routes', 'split_norm_bias', 'state_dict_mismatches', 'tucker_merged', 'tucker_product'
]

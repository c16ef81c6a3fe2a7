"""flora_mm: FLoRA -- structure-preserving low-rank tensor adaptation -- for OpenMMLab backbones.

``import flora_mm`` (or ``custom_imports=dict(imports=['flora_mm'])`` in a config) applies the compatibility
fixes of :mod:`flora_mm.compat` and registers everything flora_mm provides with the OpenMMLab registries.
The adapter core, :mod:`flora_mm.adapters`, is plain PyTorch and can be used without OpenMMLab.
"""
from . import adapters, compat

compat.apply()

from . import engine, models  # noqa: E402  (registers backbones, the optimizer constructor and hooks)
from .adapters import (adapter_state_dict, count_parameters, inject_adapters, load_adapter_state_dict,  # noqa
                       merge_adapters)

__version__ = '0.1.0'
__all__ = ['adapters', 'compat', 'engine', 'models', 'adapter_state_dict', 'count_parameters', 'inject_adapters',
           'load_adapter_state_dict', 'merge_adapters', '__version__']

models.install_adapter_build_hook()

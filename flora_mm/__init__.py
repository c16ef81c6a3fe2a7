"""flora_mm: FLoRA -- structure-preserving low-rank tensor adaptation -- for OpenMMLab backbones.

The adapter core, :mod:`flora_mm.adapters`, is plain PyTorch: it imports and works without mmengine, mmcv or
timm, and importing it (or ``flora_mm``) changes nothing outside flora_mm, even with mmengine installed. The
OpenMMLab integration -- compatibility fixes, registered backbones / optimizer constructor / hooks, the
``backbone.adapter=`` build hook -- is one explicit entry, :mod:`flora_mm.mm`: ``custom_imports =
dict(imports=['flora_mm.mm'])`` in a config, or ``import flora_mm.mm``.
"""
from . import adapters
from .adapters import (adapter_state_dict, count_parameters, inject_adapters, load_adapter_state_dict,  # noqa
                       merge_adapters)

__version__ = '0.1.0'
__all__ = ['adapters', 'adapter_state_dict', 'count_parameters', 'inject_adapters', 'load_adapter_state_dict',
           'merge_adapters', '__version__']

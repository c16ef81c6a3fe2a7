"""flora_mm: FLoRA -- structure-preserving low-rank tensor adaptation -- for OpenMMLab backbones.

The adapter core, :mod:`flora_mm.adapters`, is plain PyTorch: it imports and works without mmengine, mmcv or
timm. Where mmengine is installed, ``import flora_mm`` (or ``custom_imports=dict(imports=['flora_mm'])`` in a
config, or importing any submodule) also applies the compatibility fixes of :mod:`flora_mm.compat` and registers
everything flora_mm provides with the OpenMMLab registries (backbones, the ``backbone.adapter=`` build hook, the
optimizer constructor, hooks). Without mmengine nothing is patched or registered.
"""
from importlib.util import find_spec

from . import adapters
from .adapters import (adapter_state_dict, count_parameters, inject_adapters, load_adapter_state_dict,  # noqa
                       merge_adapters)

__version__ = '0.1.0'
__all__ = ['adapters', 'adapter_state_dict', 'count_parameters', 'inject_adapters', 'load_adapter_state_dict',
           'merge_adapters', '__version__']

#: Whether the OpenMMLab integration (compat fixes, registries) is active in this process.
WITH_MMENGINE = find_spec('mmengine') is not None
if WITH_MMENGINE:
    from . import compat
    compat.apply()
    from . import engine, models  # noqa: E402  (registers backbones, the optimizer constructor and hooks)
    models.install_adapter_build_hook()
    __all__ += ['compat', 'engine', 'models']

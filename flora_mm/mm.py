"""The OpenMMLab entry of flora_mm: name it in a config, ``custom_imports = dict(imports=['flora_mm.mm'])``
(``tools/train.py`` and ``tools/test.py`` import it themselves).

:func:`enable` (run on import, idempotent):

1. applies the compatibility fixes of :mod:`flora_mm.compat` whose version guard holds for the installed torch /
   mmengine (each names the upstream behaviour it works around; :data:`flora_mm.compat.APPLIED` lists them);
2. registers flora_mm's backbones (``ConvNeXtV2``, ``InternViT``), the adapter optimizer-wrapper constructor and
   the hooks in mmengine's registries (:mod:`flora_mm.models`, :mod:`flora_mm.engine`); with the constructor, a
   guard on the constructor registries: another constructor refuses adapters that want an ``lr_mult`` other than 1,
   which it would ignore (:func:`flora_mm.engine.optim_constructor.install_lr_mult_guard`);
3. wraps each model registry's ``build_func`` so that any backbone config takes ``adapter=dict(type=...)``.

Importing ``flora_mm`` or the plain-PyTorch core ``flora_mm.adapters`` does none of this: it changes nothing
outside flora_mm. Importing flora_mm's OpenMMLab parts (``flora_mm.models``, ``flora_mm.engine``) calls
:func:`enable`, since they are only usable with it.
"""
from __future__ import annotations

__all__ = ['enable', 'enabled']

_enabled = False


def enabled() -> bool:
    """Whether :func:`enable` has run in this process."""
    return _enabled


def enable() -> None:
    """Apply the guarded compatibility fixes, register flora_mm's modules and install the ``adapter=`` build hook."""
    global _enabled
    if _enabled:
        return
    _enabled = True
    from . import compat
    compat.apply()
    from . import engine, models  # noqa: F401  (their modules register with the registries)
    from .models.builder import install_adapter_build_hook
    install_adapter_build_hook()


enable()

"""``adapter=`` on any OpenMMLab model config: build the module as usual, then inject adapters and freeze.

OpenMMLab registries build a config with their ``build_func``. :func:`install_adapter_build_hook` wraps the build
function of mmengine's root ``MODELS`` registry and of every registry derived from it (mmdet's, mmseg's,
mmrotate's...; registries created later inherit the wrapped function from their parent). The wrapper only acts on
a config that has an ``adapter`` key and whose class does not take ``adapter`` itself (flora_mm's own backbones
do): it removes the key, builds the module with the original function and calls :func:`attach_adapter`.

So ``model.backbone.adapter=dict(type='FLoRA', rank=8)`` works for ResNet, Swin, mmseg's backbones..., and
``--cfg-options model.backbone.adapter.type=LoRA`` or ``model.backbone.adapter=None`` from the command line.
Adapters are injected at build time, i.e. before the runner wraps the model in DDP, and pretrained weights
given by the backbone's own ``init_cfg`` load later, at ``init_weights()``, onto the unchanged base keys.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable

from mmengine.logging import print_log
from mmengine.registry import MODELS, Registry
from torch import nn

from ..adapters import count_parameters, inject_adapters, register_compatible_layer

__all__ = ['attach_adapter', 'install_adapter_build_hook', 'register_mm_layers']


def register_mm_layers() -> None:
    """Declare OpenMMLab's layer wrappers adaptable. mmcv's ``Conv2d`` (registered as ``'Conv'``, used by
    mmdet's ResNet and every ``build_conv_layer``), ``Conv3d`` and ``Linear`` (used by ``FFN``) override
    ``forward`` only to handle empty tensors on torch < 1.5 and otherwise call the standard operator."""
    try:
        from mmcv.cnn.bricks import wrappers
    except ImportError:  # mmcv is optional for flora_mm's own backbones
        return
    for cls in (wrappers.Conv2d, wrappers.Conv3d, wrappers.Linear):
        register_compatible_layer(cls)


def attach_adapter(module: nn.Module, adapter: Mapping[str, Any]) -> nn.Module:
    """The one way adapters get into an OpenMMLab backbone -- flora_mm's own (their ``adapter=`` argument) and any
    other (the build hook below): inject ``adapter`` into the built module, leaving layers it froze itself
    (``frozen_stages``) without adapters and the submodules it declares new (``new_layer_names``: not part of the
    pretrained network, e.g. output norms or a feature pyramid) trainable and unadapted, then log the budget."""
    inject_adapters(module, adapter, respect_frozen=True, keep_trainable=getattr(module, 'new_layer_names', ()))
    counts = count_parameters(module)
    state = module.adapter_state
    where = [f'{len(state.layers)} adapted layers'] if state.layers else []
    if state.extra_trainable:  # BitFit adapts no layer, it unfreezes biases (and, with train_norm, norm weights)
        where.append(f'{len(state.extra_trainable)} unfrozen base tensors')
    print_log(f'{type(module).__name__}: {state.config.type} on {" + ".join(where)}, '
              f'{counts["adapter"]:,} adapter parameters ({100 * counts["adapter"] / max(counts["total"], 1):.2f}% '
              f'of {counts["total"]:,})', logger='current')
    return module


def _takes_adapter(cfg: Mapping, registry: Registry) -> bool:
    obj_type = cfg.get('type')
    if isinstance(obj_type, str):
        with registry.switch_scope_and_registry(None) as scoped:
            obj_type = scoped.get(obj_type)
    if obj_type is None:
        return False  # let the original build function raise its own "not registered" error
    try:
        return 'adapter' in inspect.signature(obj_type).parameters
    except (TypeError, ValueError):
        return False


def _wrap(build_func: Callable) -> Callable:
    if getattr(build_func, '_flora_original', None) is not None:
        return build_func

    @functools.wraps(build_func)
    def build_with_adapter(cfg, *args, registry: Registry, **kwargs):
        if isinstance(cfg, Mapping) and 'adapter' in cfg and not _takes_adapter(cfg, registry):
            cfg = cfg.copy()
            adapter = cfg.pop('adapter')
            module = build_func(cfg, *args, registry=registry, **kwargs)
            if adapter is not None:
                attach_adapter(module, adapter)
            return module
        return build_func(cfg, *args, registry=registry, **kwargs)

    build_with_adapter._flora_original = build_func
    return build_with_adapter


def _registries(root: Registry):
    yield root
    for child in root.children.values():
        yield from _registries(child)


def install_adapter_build_hook(root: Registry = MODELS) -> None:
    """Wrap the build function of ``root`` and all its descendants (idempotent); register mm layer wrappers."""
    register_mm_layers()
    for registry in _registries(root):
        registry.build_func = _wrap(registry.build_func)

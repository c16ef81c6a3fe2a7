"""``adapter=`` on any OpenMMLab model config: build the module as usual, then inject adapters and freeze.

OpenMMLab registries build a config with their ``build_func``. :func:`install_adapter_build_hook` wraps the build
function of mmengine's root ``MODELS`` registry and of every registry derived from it (mmdet's, mmseg's,
mmrotate's...; registries created later inherit the wrapped function from their parent). The wrapper only acts on
a config that has an ``adapter`` key and whose class does not take ``adapter`` itself (flora_mm's own backbones
do): it removes the key, builds the module with the original function and calls :func:`attach_adapter`. A whole
model it builds (an mmengine ``BaseModel``) whose adapters use an MPC regulariser gets ``loss_mpc`` added to its
training losses (:func:`add_mpc_loss`).

So ``model.backbone.adapter=dict(type='FLoRA', rank=8)`` works for ResNet, Swin, mmseg's backbones..., and
``--cfg-options model.backbone.adapter.type=LoRA`` or ``model.backbone.adapter=None`` from the command line.
Adapters are injected at build time, i.e. before the runner wraps the model in DDP, and pretrained weights
given by the backbone's own ``init_cfg`` load later, at ``init_weights()``, onto the unchanged base keys.
"""
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from typing import Any, Callable

from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS, Registry
from torch import nn

from ..adapters import (adapter_parameters, count_parameters, inject_adapters, mpc_layers, mpc_loss,
                        register_compatible_layer)
from .checkpoint import BASE_METADATA_KEY, base_identity, pretrained_init_cfgs

__all__ = ['add_mpc_loss', 'attach_adapter', 'install_adapter_build_hook', 'register_mm_layers', 'registry_tree']


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
    pretrained network, e.g. output norms or a feature pyramid) trainable and unadapted, counting its own norm
    classes (``norm_types``) as normalisation layers for ``train_norm``, then log the budget."""
    inject_adapters(module, adapter, respect_frozen=True, keep_trainable=getattr(module, 'new_layer_names', ()),
                    norm_types=getattr(module, 'norm_types', ()))
    counts = count_parameters(module)
    state = module.adapter_state
    where = [f'{len(state.layers)} adapted layers'] if state.layers else []
    if state.extra_trainable:  # BitFit adapts no layer, it unfreezes biases (and, with train_norm, norm weights)
        where.append(f'{len(state.extra_trainable)} unfrozen base tensors')
    module._register_load_state_dict_pre_hook(_refuse_random_base, with_module=True)
    print_log(f'{type(module).__name__}: {state.config.type} on {" + ".join(where)}, '
              f'{counts["adapter"]:,} adapter parameters ({100 * counts["adapter"] / max(counts["base"], 1):.2f}% '
              f'of the {counts["base"]:,} of the backbone)', logger='current')
    return module


def _refuse_random_base(module: nn.Module, state_dict, prefix: str, local_metadata=None, *args) -> None:
    """``load_state_dict`` pre-hook of an adapted backbone: an *adapter-only* state dict (the adapter's tensors
    without the frozen base weights) loaded into a backbone whose base was never initialised -- e.g. stock mmdet
    ``tools/test.py`` with a config lacking ``AdapterCheckpointHook`` -- would evaluate the adapter on random
    weights. The base is loaded from the backbone's ``Pretrained`` init_cfg first; without one this raises. Where
    the checkpoint recorded its base's identity (``state_dict._metadata``, see ``adapter_checkpoint``), the
    rebuilt base must be that file (SHA-256), else ``ValueError`` names both."""
    state = getattr(module, 'adapter_state', None)
    if state is None or getattr(module, 'is_init', True):
        return
    adapter_keys = [prefix + k for k in adapter_parameters(module)]
    absent = [k for k in state.frozen if prefix + k not in state_dict]
    if not absent or not any(k in state_dict for k in adapter_keys):
        return  # a full checkpoint, or one that does not hold this adapter
    name = prefix.rstrip('.') or type(module).__name__
    pretrained = pretrained_init_cfgs(module)
    if not pretrained:
        raise RuntimeError(f'{name}: an adapter-only checkpoint (without {len(absent)} frozen base tensors such as '
                           f'{absent[0]}) is loaded into a backbone whose base was never initialised and that has no '
                           f'Pretrained init_cfg: the adapter would run on random weights. Give the backbone '
                           f'init_cfg=dict(type="Pretrained", checkpoint=...) or load a full checkpoint.')
    print_log(f'{name}: the checkpoint is adapter-only ({len(absent)} frozen base tensors absent) and the backbone '
              f'was not initialised: loading its pretrained base from init_cfg first', logger='current',
              level=logging.WARNING)
    module.init_weights()
    recorded = (local_metadata or {}).get(BASE_METADATA_KEY)
    if recorded is None:
        return
    checkpoint = str(pretrained[0]['checkpoint'])
    now = base_identity(checkpoint)
    for source in recorded:
        if source['sha256'] is None or source['sha256'] != now:
            raise ValueError(f'{name}: refusing the adapter-only checkpoint: this backbone\'s base {checkpoint} '
                             f'(sha256 {now}) is not the base the adapter was trained on, {source["checkpoint"]} '
                             f'(sha256 {source["sha256"]}). To load it anyway, add '
                             f'dict(type="AdapterCheckpointHook", check_base=False) to custom_hooks.')


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


def add_mpc_loss(model: nn.Module) -> bool:
    """If adapters of ``model`` use an MPC regulariser (``mpc='orthogonal'`` / ``'diagonal'``), add it to the
    losses the model returns in ``mode='loss'`` as ``loss_mpc`` (:func:`~flora_mm.adapters.mpc_loss`): mmengine's
    ``parse_losses`` sums it into the loss it back-propagates (AMP's loss scale included) and logs it as its own
    key. Each layer's term is computed in that layer's forward, where DDP and FSDP (``use_orig_params``) hold its
    factors whole. Idempotent; nothing is registered (nothing costs) without MPC. Returns whether it was added."""
    if getattr(model, '_flora_mpc_hook', None) is not None:
        return True
    layers = mpc_layers(model)
    if not layers:
        return False

    def hook(module, args, kwargs, output):
        if kwargs.get('mode') == 'loss' and isinstance(output, dict):
            output['loss_mpc'] = mpc_loss(module, layers)
        return output

    model._flora_mpc_hook = model.register_forward_hook(hook, with_kwargs=True)
    print_log(f'{type(model).__name__}: loss_mpc added to the training losses ({len(layers)} layers with an MPC '
              f'regulariser)', logger='current')
    return True


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
        else:
            module = build_func(cfg, *args, registry=registry, **kwargs)
        if isinstance(module, BaseModel):  # a whole model (detector, segmentor): the one that returns losses
            add_mpc_loss(module)
        return module

    build_with_adapter._flora_original = build_func
    return build_with_adapter


def registry_tree(root: Registry):
    """``root`` and all its descendant registries (mmdet's, mmseg's...: children copy their parent's build_func
    when created, so a wrapped root reaches those created later too)."""
    yield root
    for child in root.children.values():
        yield from registry_tree(child)


def install_adapter_build_hook(root: Registry = MODELS) -> None:
    """Wrap the build function of ``root`` and all its descendants (idempotent); register mm layer wrappers."""
    register_mm_layers()
    for registry in registry_tree(root):
        registry.build_func = _wrap(registry.build_func)

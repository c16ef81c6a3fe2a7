"""Normalisation layers that train their bias with a frozen weight (BitFit, ``train_bias``): plain PyTorch.

On CUDA, ``F.layer_norm(x, shape, w, b)`` with ``w.requires_grad = False`` and ``b.requires_grad = True`` fails in
backward once the normalised rows exceed 65,536 (``NativeLayerNormBackward0 returned an invalid gradient at index
2 - got [0]``; seen with torch 2.11 on an H200, where 65,536 rows passed and 131,072 failed; ``tools/gpu_check.sh``
checks it on the GPU at hand) -- every BitFit run on a real detection input. The affine map is linear in the bias, so

    layer_norm(x, shape, w, b)  ==  layer_norm(x, shape, w, None) + b
    group_norm(x, g, w, b)      ==  group_norm(x, g, w, None) + b[None, :, None, ...]

hold exactly, in value and in every gradient (``d/db`` is the sum of the output gradient over the broadcast
dimensions either way). :func:`split_norm_bias` makes a module compute its norm that way: a forward pre-hook enters
a :class:`~torch.overrides.TorchFunctionMode` for the duration of the module's own ``forward`` (left by a forward
hook that runs even when ``forward`` raises), and that mode rewrites exactly the ``F.layer_norm`` / ``F.group_norm``
calls whose weight is frozen and whose bias needs a gradient. Everything else passes through unchanged, so the
rewrite is also correct after the parameters' ``requires_grad`` change. It works for any module that calls these
functionals -- ``nn.LayerNorm``, ``nn.GroupNorm``, timm's ``LayerNorm2d`` (permute, ``F.layer_norm``, permute),
mm's norms -- and changes no class, attribute or ``state_dict`` key. The cost is one extra elementwise add per
rewritten norm and a few microseconds of Python per call.
"""
from __future__ import annotations

import inspect
import threading
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ['SplitBiasNormMode', 'has_split_norm_bias', 'remove_split_norm_bias', 'split_norm_bias']


def _frozen_weight_trainable_bias(weight: Tensor | None, bias: Tensor | None) -> bool:
    return (torch.is_grad_enabled() and bias is not None and bias.requires_grad and weight is not None
            and not weight.requires_grad)


def _layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor | None:
    if not _frozen_weight_trainable_bias(weight, bias):
        return None
    out = F.layer_norm(x, normalized_shape, weight, None, eps)
    return out + bias.to(out.dtype)  # bias has the normalised (trailing) shape


def _group_norm(x: Tensor, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor | None:
    if not _frozen_weight_trainable_bias(weight, bias):
        return None
    out = F.group_norm(x, num_groups, weight, None, eps)
    return out + bias.to(out.dtype).view(-1, *(1, ) * (x.dim() - 2))  # channels are dim 1


_REWRITES: dict[Callable, tuple[inspect.Signature, Callable]] = {
    F.layer_norm: (inspect.signature(_layer_norm), _layer_norm),
    F.group_norm: (inspect.signature(_group_norm), _group_norm),
}


class SplitBiasNormMode(TorchFunctionMode):
    """Computes ``F.layer_norm`` / ``F.group_norm`` with a frozen weight and a trainable bias as the bias-free norm
    plus the bias; every other call runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rewrite = _REWRITES.get(func)
        if rewrite is not None:
            signature, fn = rewrite
            bound = signature.bind(*args, **kwargs)
            out = fn(*bound.args, **bound.kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


_active = threading.local()  # the modes entered by pre-hooks of this thread, innermost last


def _enter(module: nn.Module, args: Any) -> None:
    mode = SplitBiasNormMode()
    mode.__enter__()
    stack = getattr(_active, 'modes', None)
    if stack is None:
        stack = _active.modes = []
    stack.append(mode)


def _exit(module: nn.Module, args: Any, output: Any) -> None:
    _active.modes.pop().__exit__(None, None, None)


def split_norm_bias(module: nn.Module) -> None:
    """Make ``module``'s own forward compute its layer / group norms as ``norm(x, w, None) + b`` whenever ``w`` is
    frozen and ``b`` trains (idempotent)."""
    if has_split_norm_bias(module):
        return
    module.register_forward_pre_hook(_enter)
    module.register_forward_hook(_exit, always_call=True)


def has_split_norm_bias(module: nn.Module) -> bool:
    return any(hook is _enter for hook in module._forward_pre_hooks.values())


def remove_split_norm_bias(module: nn.Module) -> None:
    """Undo :func:`split_norm_bias` on ``module`` (no-op if it was not applied)."""
    for hooks, fn in ((module._forward_pre_hooks, _enter), (module._forward_hooks, _exit)):
        for key in [k for k, hook in hooks.items() if hook is fn]:
            del hooks[key]
            getattr(module, '_forward_hooks_always_called', {}).pop(key, None)

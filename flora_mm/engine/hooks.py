"""Training hooks for adapter runs."""
from __future__ import annotations

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor

__all__ = ['FrozenParamsCheckHook']


def _fingerprint(param: Tensor) -> Tensor:
    t = param.detach().to(torch.float64)
    return torch.stack([t.sum(), t.square().sum()])


@HOOKS.register_module()
class FrozenParamsCheckHook(Hook):
    """Verifies after the first training iteration that the frozen set really stayed frozen.

    At ``before_train`` it fingerprints every frozen parameter (float64 sum and sum of squares, on its device)
    and watches which trainable parameters receive a gradient. After the first iteration it raises
    ``RuntimeError`` naming any frozen parameter that changed, became trainable or holds a gradient, and warns
    about trainable parameters that received no gradient (they would make DDP without
    ``find_unused_parameters`` fail, and usually mean an adapter is not on the forward path).

    Args:
        strict: Raise (default) or only log an error when the frozen set was touched.
    """

    priority = 'VERY_LOW'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self._handles: list = []
        self._frozen: dict[str, tuple[Tensor, Tensor]] = {}
        self._trainable: list[str] = []
        self._got_grad: set[str] = set()
        self._done = False

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._frozen, self._trainable = {}, []
        for name, param in model.named_parameters():
            if param.requires_grad:
                self._trainable.append(name)
                self._handles.append(param.register_post_accumulate_grad_hook(
                    lambda _, name=name: self._got_grad.add(name)))
            else:
                self._frozen[name] = (param, _fingerprint(param))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._done:
            return
        self._done = True
        for handle in self._handles:
            handle.remove()
        self._handles = []
        touched = [name for name, (param, fp) in self._frozen.items()
                   if param.requires_grad or param.grad is not None or not torch.equal(_fingerprint(param), fp)]
        no_grad = [name for name in self._trainable if name not in self._got_grad]
        if no_grad:
            print_log(f'FrozenParamsCheckHook: {len(no_grad)} trainable parameters received no gradient in the '
                      f'first iteration: {no_grad[:10]}{" ..." if len(no_grad) > 10 else ""}',
                      logger='current', level='WARNING')
        if touched:
            msg = (f'FrozenParamsCheckHook: {len(touched)} frozen parameters were changed or got gradients in the '
                   f'first iteration: {touched[:10]}{" ..." if len(touched) > 10 else ""}')
            if self.strict:
                raise RuntimeError(msg)
            print_log(msg, logger='current', level='ERROR')
        else:
            print_log(f'FrozenParamsCheckHook: {len(self._frozen)} frozen parameters unchanged after the first '
                      f'iteration; {len(self._got_grad)}/{len(self._trainable)} trainable parameters got gradients',
                      logger='current')
        self._frozen = {}

"""Training hooks for adapter runs."""
from __future__ import annotations

import json
import logging
import math
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from torch import Tensor

from .adapter_checkpoint import unwrap_model

__all__ = ['DeltaWeightStatsHook', 'FiniteLossHook', 'FrozenParamsCheckHook', 'OptunaPruningHook', 'delta_stats']


def _fingerprint(param: Tensor) -> Tensor:
    t = param.detach().to(torch.float64)
    return torch.stack([t.sum(), t.square().sum()])


@HOOKS.register_module()
class FrozenParamsCheckHook(Hook):
    """Verifies that the frozen set really stayed frozen and that every trainable parameter really learns.

    At ``before_train`` it fingerprints every frozen parameter (float64 sum and sum of squares, on its device)
    and watches the gradient each trainable parameter receives. After the first iteration it raises
    ``RuntimeError`` naming any frozen parameter that changed, became trainable or holds a gradient. After
    ``grad_iters`` iterations (or at the end of a shorter run) it logs how many trainable parameters received a
    *non-zero* gradient, and warns naming those that received none (not on the forward path: DDP without
    ``find_unused_parameters`` would fail) and those whose gradient was exactly zero every time (e.g. an adapter
    scale of 0, or a branch that never reaches the loss).

    Two iterations by default because a low-rank update that starts at zero gives some factors an exactly zero
    gradient at the first step by design (FLoRA's factors while the core is 0, LoRA's ``A`` while ``B`` is 0);
    after one optimizer step they get non-zero gradients.

    Args:
        strict: Raise (default) or only log an error when the frozen set was touched.
        grad_iters: Iterations over which the non-zero gradients are counted.
    """

    priority = 'VERY_LOW'

    def __init__(self, strict: bool = True, grad_iters: int = 2) -> None:
        if not isinstance(grad_iters, int) or grad_iters < 1:
            raise ValueError(f'FrozenParamsCheckHook: grad_iters must be a positive integer, got {grad_iters!r}')
        self.strict = strict
        self.grad_iters = grad_iters
        self._handles: list = []
        self._frozen: dict[str, tuple[Tensor, Tensor]] = {}
        self._trainable: list[str] = []
        self._got_grad: set[str] = set()
        self._nonzero: set[str] = set()
        self._iters = 0
        self._reported = False

    def _record(self, name: str, param: Tensor) -> None:
        self._got_grad.add(name)
        if name not in self._nonzero and param.grad is not None and bool(param.grad.detach().ne(0).any()):
            self._nonzero.add(name)

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        self._frozen, self._trainable, self._iters, self._reported = {}, [], 0, False
        self._got_grad, self._nonzero = set(), set()
        for name, param in model.named_parameters():
            if param.requires_grad:
                self._trainable.append(name)
                self._handles.append(param.register_post_accumulate_grad_hook(
                    lambda p, name=name: self._record(name, p)))
            else:
                self._frozen[name] = (param, _fingerprint(param))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._iters += 1
        if self._iters == 1:
            self._check_frozen()
        if self._iters >= self.grad_iters:
            self._report_gradients()

    def after_train(self, runner) -> None:
        self._report_gradients()  # a run shorter than grad_iters

    def _check_frozen(self) -> None:
        touched = [name for name, (param, fp) in self._frozen.items()
                   if param.requires_grad or param.grad is not None or not torch.equal(_fingerprint(param), fp)]
        if touched:
            msg = (f'FrozenParamsCheckHook: {len(touched)} frozen parameters were changed or got gradients in the '
                   f'first iteration: {_first(touched)}')
            if self.strict:
                raise RuntimeError(msg)
            print_log(msg, logger='current', level=logging.ERROR)
        else:
            print_log(f'FrozenParamsCheckHook: {len(self._frozen)} frozen parameters unchanged after the first '
                      f'iteration', logger='current')
        self._frozen = {}

    def _report_gradients(self) -> None:
        if self._reported or not self._iters:
            return
        self._reported = True
        for handle in self._handles:
            handle.remove()
        self._handles = []
        iters = f'the first {self._iters} iteration{"s" * (self._iters > 1)}'
        no_grad = [name for name in self._trainable if name not in self._got_grad]
        zero = [name for name in self._trainable if name in self._got_grad and name not in self._nonzero]
        if no_grad:
            print_log(f'FrozenParamsCheckHook: {len(no_grad)} trainable parameters received no gradient in {iters}: '
                      f'{_first(no_grad)}', logger='current', level=logging.WARNING)
        if zero:
            print_log(f'FrozenParamsCheckHook: {len(zero)} trainable parameters received only exactly-zero '
                      f'gradients in {iters} (they do not learn): {_first(zero)}', logger='current',
                      level=logging.WARNING)
        print_log(f'FrozenParamsCheckHook: {len(self._nonzero)}/{len(self._trainable)} trainable parameters got '
                  f'non-zero gradients in {iters}', logger='current')


def _first(names: list[str], n: int = 10) -> str:
    return f'{names[:n]}{" ..." if len(names) > n else ""}'


def delta_stats(layer, rank: int | None = None) -> tuple[float, float]:
    """``(||dW||_F, ||dW||_F / ||P^T W0 Q||_F)`` of an adapted layer (the paper's Sec. 5.2 / LoRA's feature
    amplification factor), with ``dW = layer.delta_weight()``, the applied update (``s`` included), and ``P``,
    ``Q`` the top-``rank`` left / right singular vectors of ``dW`` (``P^T W0 Q``). Convolution
    weights are unfolded along the output mode (``[d_out, d_in/groups * k * k]``), for ``dW`` and ``W0`` alike.
    ``rank`` defaults to the layer's adapter rank (FLoRA: its output-mode rank; a method without one, e.g. (IA)^3:
    the full rank of ``dW``)."""
    with torch.no_grad():
        delta = layer.delta_weight().detach().float().flatten(1)
        weight = layer.weight.detach().float().flatten(1)
        if rank is None:
            rank = layer.output_rank or min(delta.shape)
        rank = min(rank, *delta.shape)
        u, _, vh = torch.linalg.svd(delta, full_matrices=False)
        projected = u[:, :rank].T @ weight @ vh[:rank].T
        fro = torch.linalg.matrix_norm(delta).item()
        denom = torch.linalg.matrix_norm(projected).item()
    return fro, fro / denom if denom > 0 else float('nan')


@HOOKS.register_module()
class DeltaWeightStatsHook(Hook):
    """Every ``interval`` training iterations (and after the first), measure ``||s*dW||_F`` and the feature
    amplification factor of every adapted layer -- the curves of the paper's Fig. 4.

    The values go to the runner's visualizer at the exact iteration (``delta/mean_fro``, ``delta/mean_amp`` and,
    with ``per_layer``, ``delta/<layer>/fro`` / ``delta/<layer>/amp``), so they land in
    ``vis_data/scalars.json`` (read by ``tools/plot_delta_stats.py``) and in TensorBoard / W&B when those
    backends are configured. The means also go to the message hub as ``train/delta_mean_fro`` and
    ``train/delta_mean_amp``, so the text log shows them.

    Args:
        interval: Iterations between two measurements.
        per_layer: Also log every layer's values (many scalars for large backbones).
    """

    priority = 'NORMAL'  # before LoggerHook, so the text log of this iteration has the new means

    def __init__(self, interval: int = 50, per_layer: bool = True) -> None:
        self.interval = interval
        self.per_layer = per_layer

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval) and runner.iter != 0:
            return
        from ..adapters import adapted_layers
        model = unwrap_model(runner.model)
        # an update without a weight form (MPC_n) has no dW to measure
        stats = {name: delta_stats(layer) for name, layer in adapted_layers(model) if layer.mergeable}
        if not stats:
            return
        fros = [v[0] for v in stats.values()]
        amps = [v[1] for v in stats.values() if v[1] == v[1]]  # drop NaN (dW = 0 at init)
        scalars = {'delta/mean_fro': sum(fros) / len(fros)}
        if amps:
            scalars['delta/mean_amp'] = sum(amps) / len(amps)
        if self.per_layer:
            for name, (fro, amp) in stats.items():
                scalars[f'delta/{name}/fro'] = fro
                if amp == amp:
                    scalars[f'delta/{name}/amp'] = amp
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        for key in ('fro', 'amp'):
            if f'delta/mean_{key}' in scalars:
                runner.message_hub.update_scalar(f'train/delta_mean_{key}', scalars[f'delta/mean_{key}'])


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stops a run whose loss is NaN or infinite, by raising ``FloatingPointError`` naming the iteration and the
    loss terms that are not finite (a diverged run would otherwise train on and report a meaningless metric).
    ``tools/tune.py`` adds it to every trial and records such a trial as failed, with this message."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        values = {k: float(torch.as_tensor(v).detach()) for k, v in (outputs or {}).items() if k.startswith('loss')}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f'the loss diverged at iteration {runner.iter + 1}: '
                                     + ', '.join(f'{k} = {v}' for k, v in bad.items()))


@HOOKS.register_module()
class OptunaPruningHook(Hook):
    """Reports each validation result of a run to its Optuna trial and stops the run when the study's pruner says
    so (``tools/tune.py`` adds it to a trial's config; the run is a separate process, so the trial is found again
    in the study's storage).

    The step reported is the training iteration of the validation. A pruned run stops training (mmengine's
    ``train_loop.stop_training``), and leaves ``optuna_pruned.json`` (step, value) in its work dir for the study to
    record the trial as pruned. Under DDP rank 0 reports and decides, every rank stops.

    Args:
        storage: The study's Optuna storage URL.
        study_name: The study.
        trial_id: The trial's storage id.
        metric: The validation metric reported.
        pruner: The pruner name (:data:`flora_mm.engine.tune.PRUNERS`).
    """

    priority = 'LOW'

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str, pruner: str = 'median') -> None:
        self.storage, self.study_name, self.trial_id = storage, study_name, trial_id
        self.metric, self.pruner = metric, pruner
        self._trial = None

    def before_train(self, runner) -> None:
        from mmengine.dist import is_main_process
        if is_main_process():
            import optuna
            from .tune import make_pruner
            study = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                      sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        from mmengine.dist import broadcast_object_list
        decision = [None]
        if self._trial is not None:
            if self.metric not in (metrics or {}):
                raise KeyError(f'OptunaPruningHook: validation gave {sorted(metrics or {})}, not {self.metric!r}')
            value, step = float(metrics[self.metric]), runner.iter
            self._trial.report(value, step)
            if self._trial.should_prune():
                decision = [dict(step=step, value=value)]
        broadcast_object_list(decision)
        if decision[0] is not None:
            print_log(f'OptunaPruningHook: trial pruned at iteration {decision[0]["step"]} '
                      f'({self.metric} {decision[0]["value"]:.4f})', logger='current')
            runner.train_loop.stop_training = True
            if runner.rank == 0:
                with open(osp.join(runner.work_dir, 'optuna_pruned.json'), 'w') as f:
                    json.dump(decision[0], f)

"""An optimizer-wrapper constructor for adapter training: trainable parameters only, one summary, no flood."""
from __future__ import annotations

import functools
import logging
from collections import defaultdict

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..adapters import adapter_parameters
from ..adapters.inject import adapter_states, named_parameters
from .adapter_checkpoint import unwrap_model

__all__ = ['AdapterOptimWrapperConstructor', 'check_frozen', 'install_lr_mult_guard', 'parameter_summary']


def check_frozen(model: nn.Module) -> None:
    """Raise ``RuntimeError`` if a base parameter that adapter injection froze has become trainable again."""
    bad = []
    for prefix, module, state in adapter_states(model):
        params = named_parameters(module)  # clean names: FSDP units rename their parameters
        bad += [f'{prefix}.{n}' if prefix else n for n in state.frozen if params[n].requires_grad]
    if bad:
        raise RuntimeError(f'{len(bad)} base parameters of an adapted module are trainable again although an '
                           f'adapter is configured (something called requires_grad_(True) after injection): '
                           f'{bad[:10]}{" ..." if len(bad) > 10 else ""}')


def parameter_summary(model: nn.Module) -> str:
    """A table of trainable / frozen / adapter parameter counts per top-level module."""
    adapter_ids = {id(p) for p in adapter_parameters(model).values()}
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for name, param in model.named_parameters():
        row = rows[name.split('.', 1)[0]]
        row[0 if param.requires_grad else 1] += param.numel()
        row[2] += param.numel() if id(param) in adapter_ids else 0
    total = [sum(col) for col in zip(*rows.values())] if rows else [0, 0, 0]
    lines = [f'{"module":<24}{"trainable":>16}{"frozen":>16}{"adapter":>14}']
    for name, (trainable, frozen, adapter) in [*rows.items(), ('total', total)]:
        lines.append(f'{name:<24}{trainable:>16,}{frozen:>16,}{adapter:>14,}')
    return '\n'.join(lines)


class _DropParamwiseChatter(logging.Filter):
    """Drops mmengine's per-parameter messages ('... is skipped since its requires_grad=False',
    'paramwise_options -- ...'), which flood the log for large frozen backbones."""

    def __init__(self):
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith('paramwise_options --') or msg.endswith('is skipped since its requires_grad=False'):
            self.dropped += 1
            return False
        return True


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class AdapterOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` over the trainable parameters only.

    * Refuses to build if a base parameter frozen by adapter injection is trainable again (:func:`check_frozen`).
    * Keeps every ``paramwise_cfg`` feature of the default constructor (``custom_keys`` with ``lr_mult`` /
      ``decay_mult``, ``norm_decay_mult``, ``bias_decay_mult``...), e.g. ``custom_keys={'flora_': dict(lr_mult=2.)}``.
    * Each adapter's ``lr_mult`` (its config's, else its method's default: ``AdapterConfig.effective_lr_mult``)
      multiplies the learning rate of every parameter the adapter trains, on top of ``paramwise_cfg``; one log line
      per multiplier other than 1.
    * Parameter groups with identical options are merged (one group per distinct setting, so the optimizer's
      multi-tensor kernels apply), and frozen parameters are left out.
    * Logs one summary table instead of mmengine's per-parameter messages.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        module = unwrap_model(model)
        check_frozen(module)
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            raise RuntimeError('the model has no trainable parameter: nothing to optimize')
        # Always take the param-wise path (it skips frozen parameters); an option that changes nothing makes
        # the default constructor use it even without a user paramwise_cfg.
        self.paramwise_cfg = self.paramwise_cfg or dict(bypass_duplicate=False)
        chatter = _DropParamwiseChatter()
        logger = MMLogger.get_current_instance()
        logger.addFilter(chatter)
        try:
            wrapper = super().__call__(module)
        finally:
            logger.removeFilter(chatter)
        print_log(f'AdapterOptimWrapperConstructor: {sum(p.numel() for p in trainable):,} trainable parameters '
                  f'in {len(wrapper.optimizer.param_groups)} group(s)\n{parameter_summary(module)}',
                  logger='current')
        return wrapper

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '', **kwargs) -> None:
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix == '':  # the outermost call: the adapters' multipliers, then merge groups with identical options
            self._apply_adapter_lr_mult(params, module)
            params[:] = self._merge_groups(params)

    def _apply_adapter_lr_mult(self, groups: list[dict], module: nn.Module) -> None:
        mults: dict[int, tuple[float, str]] = {}
        for _, adapted, state in adapter_states(module):  # an inner adapted module overrides an outer one
            mults.update({id(p): (state.config.effective_lr_mult, state.config.type)
                          for p in adapter_parameters(adapted).values()})
        applied: dict[tuple[str, float], int] = defaultdict(int)
        for group in groups:
            found = {mults.get(id(p), (1.0, '')) for p in group['params']}
            if len(found) != 1:
                raise RuntimeError(f'a parameter group mixes parameters of different adapter lr_mult: {found}')
            (mult, kind), = found
            if mult == 1.0:
                continue
            if self.base_lr is None:
                raise ValueError(f'{kind} adapter: lr_mult {mult:g} multiplies the optimizer\'s lr, which the '
                                 f'optimizer config does not set')
            group['lr'] = group.get('lr', self.base_lr) * mult
            applied[(kind, mult)] += sum(p.numel() for p in group['params'])
        for (kind, mult), count in applied.items():
            print_log(f'AdapterOptimWrapperConstructor: the {count:,} parameters the {kind} adapter trains at '
                      f'x{mult:g} the learning rate (its lr_mult)', logger='current')

    @staticmethod
    def _merge_groups(groups: list[dict]) -> list[dict]:
        merged: dict[tuple, dict] = {}
        for group in groups:
            options = {k: v for k, v in group.items() if k != 'params'}
            key = tuple(sorted((k, repr(v)) for k, v in options.items()))
            merged.setdefault(key, dict(options, params=[]))['params'].extend(group['params'])
        return list(merged.values())


class _RefusesAdapterLrMult:
    """Another optimizer-wrapper constructor, refusing a model whose adapters want a learning-rate multiplier: it would
    train them at the optimizer's rate, silently (only :class:`AdapterOptimWrapperConstructor` applies ``lr_mult``)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, model: nn.Module):
        wanted = {}
        for _, _, state in adapter_states(model):
            config = state.config
            if config.effective_lr_mult != 1.0:
                source = 'its config\'s' if config.lr_mult is not None else f'the {config.type} method\'s default'
                wanted[config.type] = f'{config.type} adapter: lr_mult {config.effective_lr_mult:g} ({source})'
        if wanted:
            raise ValueError(f'{"; ".join(wanted.values())}, but this config builds its optimizer with '
                             f'{type(self._inner).__name__}, which would train the adapter at the optimizer\'s '
                             f'learning rate: set optim_wrapper.constructor=\'AdapterOptimWrapperConstructor\' (it '
                             f'applies lr_mult), or lr_mult=1 in the adapter config to train at the config\'s rate')
        return self._inner(model)


def _guarded(build):
    if getattr(build, '_refuses_adapter_lr_mult', False):
        return build

    @functools.wraps(build)
    def guarded(cfg, *args, **kwargs):
        constructor = build(cfg, *args, **kwargs)
        return constructor if isinstance(constructor, AdapterOptimWrapperConstructor) else \
            _RefusesAdapterLrMult(constructor)

    guarded._refuses_adapter_lr_mult = True
    return guarded


def install_lr_mult_guard(root=OPTIM_WRAPPER_CONSTRUCTORS) -> None:
    """Wrap the build function of ``root`` and its descendants (idempotent): an optimizer-wrapper constructor other
    than :class:`AdapterOptimWrapperConstructor` refuses a model whose adapters want an ``lr_mult`` other than 1
    (a method's declared default, :mod:`flora_mm.engine.defaults`, or the config's) instead of ignoring it."""
    from ..models.builder import registry_tree
    for registry in registry_tree(root):
        registry.build_func = _guarded(registry.build_func)


install_lr_mult_guard()  # with the constructor's registration: wherever it can be named, the others are guarded

"""Adapter parameter budgets of a backbone config, counted on the meta device, and a rank solver.

The paper tuned FLoRA's rank by hand to match LoRA's budget; :func:`solve_rank` does it: the budget grows
monotonically with the rank, so a bisection over integer ranks finds the closest one.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from mmengine.registry import MODELS

from ..adapters import METHODS, count_parameters

__all__ = ['match_budget', 'adapter_budget', 'solve_rank', 'trainable_parameters']


def trainable_parameters(backbone_cfg: Mapping[str, Any]) -> tuple[int, int]:
    """``(trainable, total)`` parameters of the backbone built from ``backbone_cfg`` (on the meta device, without
    loading its ``init_cfg``): what a run trains of its backbone -- adapters, unfrozen weights, new layers."""
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg.pop('init_cfg', None)
    with torch.device('meta'):
        model = MODELS.build(cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def adapter_budget(backbone_cfg: Mapping[str, Any], adapter: Mapping[str, Any] | None) -> tuple[int, int]:
    """``(adapter parameters, base parameters)`` of the backbone built with ``adapter`` on the meta device."""
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg['adapter'] = None if adapter is None else dict(adapter)
    cfg.pop('init_cfg', None)
    with torch.device('meta'):
        model = MODELS.build(cfg)
    counts = count_parameters(model)
    bias_only = adapter is not None and METHODS[adapter['type']].trains_bias
    return counts['adapter'], counts['total'] - (0 if bias_only else counts['adapter'])


def solve_rank(backbone_cfg: Mapping[str, Any], adapter: Mapping[str, Any], target: int, key: str = 'rank',
               max_rank: int = 4096) -> tuple[int, int]:
    """The value of ``adapter[key]`` (a rank) whose budget is closest to ``target``; returns ``(rank, budget)``."""
    if target <= 0:
        raise ValueError(f'target budget must be positive, got {target}')

    def budget(rank: int) -> int:
        return adapter_budget(backbone_cfg, {**adapter, key: rank})[0]

    lo, hi = 1, max_rank
    if budget(hi) < target:
        raise ValueError(f'{adapter.get("type")} cannot reach {target:,} parameters with {key} <= {max_rank}')
    while lo < hi:  # smallest rank whose budget >= target
        mid = (lo + hi) // 2
        if budget(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [r for r in (lo - 1, lo) if r >= 1]
    best = min(candidates, key=lambda r: abs(budget(r) - target))
    return best, budget(best)


def match_budget(backbone_cfg: Mapping[str, Any], adapter: Mapping[str, Any], reference: Mapping[str, Any],
                 key: str = 'rank') -> tuple[int, int, int]:
    """The value of ``adapter[key]`` whose budget on the backbone is closest to that of the ``reference`` adapter
    (e.g. FLoRA's rank at LoRA r = 8's budget): ``(rank, budget, reference budget)``. The one budget matcher of
    every tool (benchmark, reproduction, param_budget)."""
    target = adapter_budget(backbone_cfg, reference)[0]
    rank, budget = solve_rank(backbone_cfg, adapter, target, key=key)
    return rank, budget, target

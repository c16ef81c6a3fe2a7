"""Adapter parameter budgets of a backbone config, counted on the meta device, and a rank solver.

The paper tuned FLoRA's rank by hand to match LoRA's budget; :func:`solve_rank` does it: the budget grows
monotonically with the rank, so a bisection over integer ranks finds the closest one.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.registry import MODELS

from ..adapters import METHODS, count_parameters

__all__ = ['README_BUDGETS', 'budget_table', 'match_budget', 'adapter_budget', 'readme_budget_table', 'solve_rank',
           'trainable_parameters']


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
    return counts['adapter'], counts['base']


def solve_rank(backbone_cfg: Mapping[str, Any], adapter: Mapping[str, Any], target: int, key: str = 'rank',
               max_rank: int = 4096) -> tuple[int, int]:
    """The value of ``adapter[key]`` (a rank) whose budget is closest to ``target``; returns ``(rank, budget)``.

    The budget grows monotonically with the rank (and nearly linearly), so the smallest rank reaching ``target`` is
    bracketed and found by interpolation steps, with a bisection step whenever interpolation fails to halve the
    bracket: a handful of meta-device builds instead of a dozen."""
    if target <= 0:
        raise ValueError(f'target budget must be positive, got {target}')
    seen: dict[int, int] = {}

    def budget(rank: int) -> int:
        if rank not in seen:
            seen[rank] = adapter_budget(backbone_cfg, {**adapter, key: rank})[0]
        return seen[rank]

    lo, hi = 1, max_rank
    if budget(hi) < target:
        raise ValueError(f'{adapter.get("type")} cannot reach {target:,} parameters with {key} <= {max_rank}')
    if budget(lo) >= target:
        hi = lo
    bisect = False
    while hi - lo > 1:  # invariant: budget(lo) < target <= budget(hi)
        if bisect:
            mid = (lo + hi) // 2
        else:
            mid = lo + round((target - budget(lo)) * (hi - lo) / (budget(hi) - budget(lo)))
            mid = min(max(mid, lo + 1), hi - 1)
        width = hi - lo
        if budget(mid) >= target:
            hi = mid
        else:
            lo = mid
        bisect = not bisect and (hi - lo) * 2 > width  # interpolation did not halve the bracket: bisect next
    candidates = [r for r in (hi - 1, hi) if r >= 1]
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


#: The README's parameter-budget table: per backbone (label, config whose ``model.backbone`` is counted), the rows
#: as (row label, adapter options over the config adapter's ``targets``).
README_BUDGETS: tuple = (
    ('ConvNeXt-V2-L', 'configs/flora_convnext_coco.py', (
        ('BitFit', '-', dict(type='BitFit')),
        *(('LoRA', r, dict(type='LoRA', rank=r)) for r in (4, 8, 16, 25, 32)),
        *(('DoRA', r, dict(type='DoRA', rank=r)) for r in (8, 16, 25)),
        *(('FLoRA (r3=2)', r, dict(type='FLoRA', rank=r, kernel_rank=2)) for r in (16, 32, 42, 84, 129)),
        ('TriLoRA', 8, dict(type='TriLoRA', rank=8)),
        *((m, '-', dict(type=m)) for m in ('IA3', 'SSL', 'SSB')))),
    ('InternViT-6B', 'configs/flora_internvit_ade20k.py', (
        ('BitFit', '-', dict(type='BitFit')),
        *(('LoRA', r, dict(type='LoRA', rank=r)) for r in (8, 16, 32)),
        ('DoRA', 16, dict(type='DoRA', rank=16)),
        *(('FLoRA', r, dict(type='FLoRA', rank=r)) for r in (8, 16, 32)),
        ('TriLoRA', 16, dict(type='TriLoRA', rank=16)),
        *((m, '-', dict(type=m)) for m in ('IA3', 'SSL', 'SSB')))),
)


def _millions(n: int) -> str:
    return f'{n / 1e6:.2f}M' if n >= 1e6 else f'{n / 1e6:.3f}M'


def _percent(part: int, whole: int) -> str:
    pct = 100 * part / whole
    return f'{pct:.2f}%' if pct >= 0.1 else f'{pct:.3f}%'


def budget_table(backbones: Sequence[tuple[str, Mapping[str, Any], Sequence[tuple]]]) -> str:
    """A Markdown table of adapter budgets: ``backbones`` = ``[(label, backbone config, rows)]`` with rows as in
    :data:`README_BUDGETS` (adapter options get the backbone adapter's ``targets``). "% of backbone" divides by
    the backbone's own parameters (:func:`adapter_budget`'s base, the same whatever the adapter)."""
    lines = ['| backbone | method | rank | adapter params | % of backbone |', '|---|---|---|---|---|']
    for label, backbone, rows in backbones:
        targets = (backbone.get('adapter') or {}).get('targets')
        for method, rank, adapter in rows:
            options = dict(adapter) if targets is None or METHODS[adapter['type']].trains_bias else \
                dict(adapter, targets=list(targets))
            n, base = adapter_budget(backbone, options)
            lines.append(f'| {label} | {method} | {rank} | {_millions(n)} | {_percent(n, base)} |')
    return '\n'.join(lines) + '\n'


def readme_budget_table(repo: str | Path) -> str:
    """The README's budget table: :data:`README_BUDGETS` counted now on the configs of the checkout ``repo``
    (``tools/param_budget.py --readme`` writes it)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    backbones = []
    for label, config, rows in README_BUDGETS:
        cfg = Config.fromfile(str(Path(repo) / config))
        init_default_scope(cfg.get('default_scope'))
        backbones.append((label, cfg.model.backbone, rows))
    return budget_table(backbones)

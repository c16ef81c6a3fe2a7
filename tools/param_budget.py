#!/usr/bin/env python
"""Adapter parameter budgets of a config's backbone (FLoRA / LoRA / DoRA / TriLoRA at several ranks; BitFit, (IA)^3,
SSL, SSB), counted on
the meta device (no memory needed, InternViT-6B included), and the FLoRA rank that matches a target budget.

Examples::

    tools/param_budget.py configs/flora_convnext_coco.py
    tools/param_budget.py configs/flora_convnext_coco.py --match 12.94M
    tools/param_budget.py configs/flora_convnext_coco.py --match-method LoRA --rank 8
    tools/param_budget.py --readme README.md     # regenerate the README's method and budget tables
"""
import argparse
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import init_default_scope

import flora_mm.mm  # noqa: F401
from flora_mm import docblocks
from flora_mm.adapters.methods import method_table
from flora_mm.models.budget import adapter_budget, match_budget, readme_budget_table, solve_rank

ROOT = Path(__file__).resolve().parents[1]

SUFFIX = {'k': 1e3, 'm': 1e6, 'b': 1e9}


def parse_count(text: str) -> int:
    text = text.strip().lower()
    scale = SUFFIX.get(text[-1], 1)
    return int(round(float(text[:-1] if scale != 1 else text) * scale))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?')
    parser.add_argument('--readme', type=Path, help='rewrite the budget table of this README and exit')
    parser.add_argument('--ranks', type=int, nargs='+', default=[4, 8, 16, 32])
    parser.add_argument('--kernel-rank', type=int, help="FLoRA's r3 (default: the config's, else 2)")
    parser.add_argument('--match', help='target budget, e.g. 12.94M: solve the FLoRA rank')
    parser.add_argument('--match-method', choices=['LoRA', 'DoRA', 'TriLoRA'],
                        help='match the budget of this method ...')
    parser.add_argument('--rank', type=int, help='... at this rank')
    args = parser.parse_args()
    if args.readme is not None:
        docblocks.replace_block(args.readme, readme_budget_table(ROOT), 'tools/param_budget.py', 'budgets')
        docblocks.replace_block(args.readme, method_table(), 'tools/param_budget.py', 'methods')
        print(f'{args.readme}: method and budget tables regenerated')
        return
    if args.config is None:
        parser.error('give a CONFIG (or --readme README.md)')

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope'))
    backbone = cfg.model.backbone
    template = dict(backbone.get('adapter') or dict(type='FLoRA'))
    targets = template.get('targets')
    common = {} if targets is None else dict(targets=list(targets))
    kernel_rank = args.kernel_rank or (template.get('kernel_rank', 2) if template['type'] == 'FLoRA' else 2)
    flora = dict(type='FLoRA', **common, kernel_rank=kernel_rank, scale=template.get('scale', 1.0))

    if args.match or args.match_method:
        if args.match_method:
            if args.rank is None:
                parser.error('--match-method needs --rank')
            rank, budget, target = match_budget(backbone, flora, dict(type=args.match_method, rank=args.rank,
                                                                      **common))
            what = f'{args.match_method} r={args.rank}'
        else:
            target, what = parse_count(args.match), args.match
            rank, budget = solve_rank(backbone, flora, target)
        print(f'target {what}: {target:,} parameters')
        print(f'FLoRA rank {rank} (kernel_rank {kernel_rank}): {budget:,} parameters '
              f'({100 * (budget / target - 1):+.2f}%)')
        print(f'--cfg-options model.backbone.adapter.type=FLoRA model.backbone.adapter.rank={rank} '
              f'model.backbone.adapter.kernel_rank={kernel_rank}')
        return

    _, base = adapter_budget(backbone, None)
    print(f'{backbone.type} backbone: {base:,} parameters')
    print('| method | rank | adapter parameters | % of backbone |\n|---|---|---|---|')
    n, _ = adapter_budget(backbone, dict(type='BitFit'))
    print(f'| BitFit | - | {n:,} | {100 * n / base:.3f}% |')
    for method in ('LoRA', 'DoRA', 'TriLoRA', 'FLoRA'):
        for rank in args.ranks:
            adapter = {**flora, 'rank': rank} if method == 'FLoRA' else dict(type=method, rank=rank, **common)
            n, _ = adapter_budget(backbone, adapter)
            print(f'| {method} | {rank} | {n:,} | {100 * n / base:.2f}% |')
    for method in ('IA3', 'SSL', 'SSB'):  # no rank: one budget each
        n, _ = adapter_budget(backbone, dict(type=method, **common))
        print(f'| {method} | - | {n:,} | {100 * n / base:.3f}% |')


if __name__ == '__main__':
    main()

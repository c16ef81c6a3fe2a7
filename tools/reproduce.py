#!/usr/bin/env python
"""Adaptation runs on the shifted target domains (docs/reproduction.md): every method, paired seeds, one JSON per run.

    tools/reproduce.py --tasks dota ade20k --methods zero_shot base full --seeds 0   # the bracket (calibration)
    tools/reproduce.py --seeds 0 1 2 3 4                       # the grid: 3 tasks x all methods x 5 seeds
    tools/reproduce.py --tasks coco --methods flora --seeds 0 --repeat 1   # the same run again (noise)
    tools/reproduce.py --aggregate-only                        # summary.json / summary.md from the run files

Each task starts from its shipped *source* model (``flora_mm://..._source_...``, see tools/make_source_models.py)
and fine-tunes it on the shifted target data (``flora_mm.data``, ``shift=True``, generated on first use) through
``tools/train.py``, the method switched with ``--cfg-options`` on the task's target config; ``zero_shot`` evaluates
the source model with ``tools/test.py``. The seed fixes data order and new-layer initialisation, so runs pair across
methods. Finished runs (``runs/<task>/<method>_s<seed>[_r<k>].json``) are skipped: the grid spans sittings.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import time
from pathlib import Path

from flora_mm.engine.runs import test_config, train_config

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / 'tools'

TASKS = {  # target config, shipped source model, primary metric (+ others), factor to percent, target data
    'coco': dict(config='configs/demo/flora_convnext-atto_mask-rcnn_demo-coco.py',
                 source='flora_mm://mask_rcnn_atto_source_coco', metric='coco/bbox_mAP',
                 extra=('coco/segm_mAP', 'coco/bbox_mAP_50'), to_percent=100,
                 data=dict(maker='make_coco', root='data/target_coco', num_train=256, num_val=64, img_size=128),
                 quick={'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1,
                        'default_hooks.checkpoint.interval': 1}),
    'dota': dict(config='configs/adaptation/oriented-rcnn_convnextv2-atto_target-dota.py',
                 source='flora_mm://oriented_rcnn_atto_source_dota', metric='dota/mAP', extra=('dota/AP50', ),
                 to_percent=100,
                 data=dict(maker='make_dota', root='data/target_dota', num_train=256, num_val=64, img_size=128),
                 quick={'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                        'default_hooks.checkpoint.interval': 2}),
    'ade20k': dict(config='configs/adaptation/upernet_convnextv2-atto_target-ade20k.py',
                   source='flora_mm://upernet_atto_source_ade20k', metric='mIoU', extra=('aAcc', 'mAcc'),
                   to_percent=1,
                   data=dict(maker='make_ade20k', root='data/target_ade20k', num_train=256, num_val=64, img_size=128),
                   quick={'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                          'default_hooks.checkpoint.interval': 2}),
}
QUICK_DATA = dict(num_train=8, num_val=4, img_size=64)
ADAPTER = 'model.backbone.adapter'
#: method -> overrides of the target config (which is FLoRA at LoRA r=2's budget)
METHODS = {
    'zero_shot': {ADAPTER: None, 'model.backbone.frozen_stages': 4},
    'base': {ADAPTER: None, 'model.backbone.frozen_stages': 4},
    'full': {ADAPTER: None},
    'bitfit': {f'{ADAPTER}.type': 'BitFit'},
    'lora': {f'{ADAPTER}.type': 'LoRA', f'{ADAPTER}.rank': 2, f'{ADAPTER}.scale': 1.0},
    'dora': {f'{ADAPTER}.type': 'DoRA', f'{ADAPTER}.rank': 2, f'{ADAPTER}.scale': 1.0},
    'flora': {},
}
PAIRS = (('flora', 'lora'), ('flora', 'dora'), ('flora', 'base'), ('lora', 'base'), ('full', 'base'))


def ensure_data(task: str, root: Path, quick: bool) -> None:
    from flora_mm.data import ensure_dataset
    spec = dict(TASKS[task]['data'], **(QUICK_DATA if quick else {}))
    ensure_dataset(spec.pop('maker'), root / spec.pop('root'), seed=0, shift=True, **spec)


def trainable_backbone_params(task: str, method: str) -> dict:
    """Trainable and total parameters of the method's backbone, counted on the built module."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from flora_mm.models.budget import trainable_parameters
    cfg = Config.fromfile(str(ROOT / TASKS[task]['config']))
    cfg.merge_from_dict(METHODS[method])
    init_default_scope(cfg.default_scope)
    trainable, total = trainable_parameters(cfg.model.backbone)
    return dict(backbone_trainable=0 if method == 'zero_shot' else trainable, backbone_params=total)


def _commit() -> str:
    proc = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or 'unknown'


def run_one(out: Path, task: str, method: str, seed: int, repeat: int, quick: bool, root: Path) -> dict:
    name = f'{method}_s{seed}' + (f'_r{repeat}' if repeat else '')
    path = out / 'runs' / task / f'{name}.json'
    if path.exists():
        return json.loads(path.read_text())
    spec = TASKS[task]
    ensure_data(task, root, quick)
    work_dir = root / 'work_dirs' / 'adaptation' / out.name / task / name  # logs and checkpoints stay out of out/
    overrides = dict(METHODS[method], **{'randomness.seed': seed}, **(spec['quick'] if quick else {}))
    print(f'[{task}] {name} ...', flush=True)
    start = time.time()
    if method == 'zero_shot':
        metrics = test_config(TOOLS, ROOT / spec['config'], spec['source'], work_dir, overrides, cwd=root,
                              log=work_dir / 'test.log')
    else:
        metrics = train_config(TOOLS, ROOT / spec['config'], work_dir, overrides, spec['metric'], cwd=root,
                               log=work_dir / 'train.log')
    result = dict(task=task, method=method, seed=seed, repeat=repeat, overrides=METHODS[method],
                  budget=trainable_backbone_params(task, method),
                  metrics={k: metrics[k] for k in (spec['metric'], *spec['extra']) if k in metrics},
                  minutes=round((time.time() - start) / 60, 2), commit=_commit(), quick=quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + '\n')
    print(f'[{task}] {name}: {spec["metric"]} {result["metrics"].get(spec["metric"], float("nan")):.4f} '
          f'in {result["minutes"]:.1f} min', flush=True)
    return result


def _t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean."""
    from scipy import stats
    n = len(values)
    mean = statistics.mean(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def aggregate(out: Path) -> str:
    """``summary.json`` (every per-seed value, paired differences with 95% t intervals) and ``summary.md``."""
    runs = [json.loads(p.read_text()) for p in sorted((out / 'runs').glob('*/*.json'))]
    summary: dict = dict(methods=[], pairs=[], repeats=[])
    lines = []
    for task, spec in TASKS.items():
        mine = [r for r in runs if r['task'] == task]
        if not mine:
            continue
        metric, scale = spec['metric'], spec['to_percent']
        value = {(r['method'], r['seed']): scale * r['metrics'][metric] for r in mine if not r['repeat']}
        lines += [f'\n### {task} ({metric}, %)\n', '| method | trainable backbone params | seeds | mean ± std | '
                  'per seed |', '|---|---:|---:|---:|---|']
        for method in METHODS:
            seeds = sorted(s for m, s in value if m == method)
            if not seeds:
                continue
            vals = [value[(method, s)] for s in seeds]
            budget = next(r['budget'] for r in mine if r['method'] == method)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            summary['methods'].append(dict(task=task, method=method, seeds=seeds, values=vals, budget=budget,
                                           mean=statistics.mean(vals), std=std))
            lines.append(f'| {method} | {budget["backbone_trainable"]:,} | {len(seeds)} | '
                         f'{statistics.mean(vals):.2f} ± {std:.2f} | {", ".join(f"{v:.1f}" for v in vals)} |')
        pair_lines = []
        for a, b in PAIRS:
            seeds = sorted(s for m, s in value if m == a and (b, s) in value)
            if len(seeds) < 2:
                continue
            diffs = [value[(a, s)] - value[(b, s)] for s in seeds]
            low, high = _t_interval(diffs)
            verdict = 'resolved' if low > 0 or high < 0 else 'not resolved'
            summary['pairs'].append(dict(task=task, a=a, b=b, seeds=seeds, diffs=diffs, mean=statistics.mean(diffs),
                                         ci95=[low, high], verdict=verdict))
            pair_lines.append(f'| {a} - {b} | {len(seeds)} | {statistics.mean(diffs):+.2f} | '
                              f'[{low:+.2f}, {high:+.2f}] | {verdict} |')
        if pair_lines:
            lines += ['', '| paired difference | seeds | mean | 95% CI (t) | verdict |', '|---|---:|---:|---:|---|',
                      *pair_lines]
        for r in (r for r in mine if r['repeat']):
            first = value.get((r['method'], r['seed']))
            if first is not None:
                again = scale * r['metrics'][metric]
                summary['repeats'].append(dict(task=task, method=r['method'], seed=r['seed'], first=first,
                                               again=again, difference=again - first))
                lines.append(f'\nSame run repeated ({r["method"]}, seed {r["seed"]}): {first:.2f} then {again:.2f} '
                             f'(difference {again - first:+.2f})')
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    table = '\n'.join(lines).strip() + '\n'
    (out / 'summary.md').write_text(table)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--repeat', type=int, default=0, help='k > 0: run again as repeat k (noise measurement)')
    parser.add_argument('--out', type=Path, default=ROOT / 'results' / 'adaptation')
    parser.add_argument('--root', type=Path, default=ROOT, help='where the target data goes (default: the repo)')
    parser.add_argument('--quick', action='store_true', help='tiny data, 1-2 iterations per run (smoke test)')
    parser.add_argument('--aggregate-only', action='store_true')
    args = parser.parse_args()
    out = args.out.resolve()
    if not args.aggregate_only:
        for task in args.tasks:
            for seed in args.seeds:
                for method in args.methods:
                    if method == 'zero_shot' and seed != args.seeds[0]:
                        continue  # no training: the same for every seed
                    run_one(out, task, method, seed, args.repeat, args.quick, args.root.resolve())
    print(aggregate(out))


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Run the small-scale reproduction of the paper's method comparison (docs/reproduction.md) and aggregate it.

    tools/reproduce.py                         # the whole grid: 3 tasks x 6 methods, 3 seeds on DOTA, 1 elsewhere
    tools/reproduce.py --tasks dota --seeds 0  # a part of it
    tools/reproduce.py --sweep rank            # FLoRA rank sweep on DOTA (paper Fig. 3); --sweep scale: Fig. 5
    tools/reproduce.py --quick --out work_dirs/q  # a 2-iteration smoke version of every run (tests)
    tools/reproduce.py --aggregate-only        # rebuild the tables from the finished runs

Every run trains one method on one task through ``tools/train.py`` (the real mmdet / mmrotate / mmseg pipelines)
from our pretrained ConvNeXt-V2-atto base (``tools/pretrain_base.py``, built on first use) on the *shifted*
target data (``flora_mm.data`` with ``shift=True``, generated on first use), then writes ``runs/<task>/<run>.json``
(method, adapter config, budget, seed, metrics, wall time). Finished runs are skipped, so the grid can span
several sittings. LoRA and DoRA use rank ``--lora-rank``; FLoRA's rank is solved to LoRA's budget.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.pretrain_base import DEFAULT_CHECKPOINT, ensure_base  # noqa: E402

TASKS = {  # config, primary metric, other metrics, data maker
    'dota': dict(config='configs/reproduction/dota.py', metric='dota/mAP', extra=('dota/AP50', 'dota/AP75'),
                 maker='make_dota', to_percent=100, iters=600),
    'coco': dict(config='configs/reproduction/coco.py', metric='coco/bbox_mAP',
                 extra=('coco/segm_mAP', 'coco/bbox_mAP_50'), maker='make_coco', to_percent=100, iters=400),
    'ade20k': dict(config='configs/reproduction/ade20k.py', metric='mIoU', extra=('aAcc', 'mAcc'),
                   maker='make_ade20k', to_percent=1, iters=400),  # mmseg reports percentages already
}
METHODS = ('base', 'full', 'bitfit', 'lora', 'dora', 'flora')
DEFAULT_SEEDS = dict(dota=(0, 1, 2), coco=(0, ), ade20k=(0, ))
SWEEPS = dict(rank=dict(rank=(2, 4, 8, 16, 32)), scale=dict(scale=(0.25, 1.0, 4.0, 16.0)))


def backbone_cfg(task: str) -> dict:
    from mmengine.config import Config
    return Config.fromfile(str(ROOT / TASKS[task]['config'])).model.backbone.to_dict()


def method_backbone(method: str, task: str, lora_rank: int, **flora) -> dict:
    """The ``model.backbone`` overrides of a method (LoRA/DoRA at ``lora_rank``, FLoRA matched to LoRA)."""
    if method == 'base':
        return dict(adapter=None, frozen_stages=4)
    if method == 'full':
        return dict(adapter=None)
    if method == 'bitfit':
        return dict(adapter=dict(_delete_=True, type='BitFit'))
    if method in ('lora', 'dora'):
        return dict(adapter=dict(_delete_=True, type=dict(lora='LoRA', dora='DoRA')[method], rank=lora_rank,
                                 alpha=lora_rank))
    if method == 'flora':
        adapter = dict(type='FLoRA', kernel_rank=2, scale=4.0)
        adapter.update({k: v for k, v in flora.items() if v is not None})
        if 'rank' not in adapter:
            from flora_mm.models.budget import match_budget
            adapter['rank'] = match_budget(backbone_cfg(task), adapter, dict(type='LoRA', rank=lora_rank))[0]
        return dict(adapter=dict(_delete_=True, **adapter))
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')


def ensure_data(task: str, root: Path, quick: bool) -> None:
    marker = root / '.complete'
    if marker.exists():
        return
    import flora_mm.data as data
    sizes = dict(num_train=8, num_val=4, img_size=64) if quick else dict(num_train=256, num_val=64, img_size=128)
    getattr(data, TASKS[task]['maker'])(root, seed=0, shift=True, **sizes)
    marker.write_text('')


def portable(path: Path) -> str:
    """``path`` relative to the repository root (where tools/train.py runs) if it lies inside it, so generated
    configs hold no machine-specific paths; absolute otherwise (e.g. a --quick run's temporary folder)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_config(task: str, backbone: dict, seed: int, iters: int, data_root: Path, base_ckpt: Path,
               cfg_dir: Path) -> str:
    """A config file (to be written in ``cfg_dir``) that inherits the task's reproduction config and sets method,
    seed, schedule, data and base checkpoint. ``_base_`` is relative to ``cfg_dir``, other paths to the
    repository root (see :func:`portable`)."""
    base = json.dumps(os.path.relpath(ROOT / TASKS[task]['config'], Path(cfg_dir).resolve()))
    data = f"dict(dataset=dict(data_root={json.dumps(portable(data_root) + '/')}))"
    backbone = dict(backbone, init_cfg=dict(type='Pretrained', checkpoint=portable(base_ckpt)))
    ann_file = portable(Path(data_root) / 'annotations/instances_val2017.json')
    evaluator = (f"val_evaluator = dict(ann_file={json.dumps(ann_file)})\ntest_evaluator = val_evaluator"
                 if task == 'coco' else '')
    return f'''_base_ = {base}
model = dict(backbone={backbone!r})
randomness = dict(seed={seed}, deterministic=False)
train_dataloader = {data}
val_dataloader = {data}
test_dataloader = val_dataloader
{evaluator}
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end={min(50, iters)}),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end={iters}, eta_min_ratio=0.01)
]
default_hooks = dict(checkpoint=dict(interval={iters}))
'''


def budget(task: str, backbone: dict) -> dict:
    """Trainable backbone parameters of a method: the adapter's, all (full) or none (base)."""
    from flora_mm.models.budget import adapter_budget
    cfg = {**backbone_cfg(task), **{k: v for k, v in backbone.items() if k != 'adapter'}}
    adapter = backbone['adapter'] and {k: v for k, v in backbone['adapter'].items() if k != '_delete_'}
    trainable, total = adapter_budget(cfg, adapter)
    if adapter is None:
        trainable = 0 if cfg.get('frozen_stages', -1) >= 4 else total
    return dict(backbone_trainable=trainable, backbone_params=total, percent=round(100 * trainable / total, 3))


def final_metrics(work_dir: Path, task: str) -> dict:
    from flora_mm.engine.logs import read_scalars
    keys = (TASKS[task]['metric'], *TASKS[task]['extra'])
    records = [r for r in read_scalars(work_dir, latest_only=True) if TASKS[task]['metric'] in r]
    if not records:
        raise RuntimeError(f'{work_dir}: no validation result')
    return {k: records[-1][k] for k in keys if k in records[-1]}


def run_one(out: Path, task: str, name: str, backbone: dict, seed: int, iters: int, quick: bool,
            base_ckpt: Path) -> dict | None:
    result_path = out / 'runs' / task / f'{name}.json'
    if result_path.exists():
        return json.loads(result_path.read_text())
    data_root = out / 'data' / task if quick else ROOT / 'data' / f'repro_{task}'
    ensure_data(task, data_root, quick)
    work_dir = out / 'work_dirs' / task / name
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out / 'configs' / task / f'{name}.py'  # not in work_dir: the runner dumps the full config there
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(run_config(task, backbone, seed, iters, data_root, base_ckpt, cfg_path.parent))
    print(f'[{task}] {name}: training {iters} iterations ...', flush=True)
    start = time.time()
    with (work_dir / 'train.log').open('w') as log:
        proc = subprocess.run([sys.executable, str(ROOT / 'tools/train.py'), str(cfg_path), '--work-dir',
                               str(work_dir)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.time() - start) / 60
    if proc.returncode != 0:
        print(f'[{task}] {name}: FAILED (exit {proc.returncode}); see {work_dir / "train.log"}', flush=True)
        return None
    result = dict(task=task, run=name, method=name.rsplit('_s', 1)[0], seed=seed, iters=iters,
                  backbone=backbone, budget=budget(task, backbone), metrics=final_metrics(work_dir, task),
                  minutes=round(minutes, 2), config=str(cfg_path.relative_to(out)),
                  work_dir=str(work_dir.relative_to(out)))
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2))
    metric = TASKS[task]['metric']
    print(f'[{task}] {name}: {metric} {result["metrics"].get(metric, float("nan")):.4f} in {minutes:.1f} min',
          flush=True)
    return result


def aggregate(out: Path) -> str:
    """``summary.json`` and ``summary.md``: mean +- std per task and method over the finished seeds."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for path in sorted((out / 'runs').glob('*/*.json')):
        r = json.loads(path.read_text())
        rows.setdefault((r['task'], r['method']), []).append(r)
    summary, lines = [], []
    for task in TASKS:
        names = sorted({m for t, m in rows if t == task}, key=_method_order)
        if not names:
            continue
        metric = TASKS[task]['metric']
        lines += [f'\n### {task} ({metric}, %)\n', '| method | trainable backbone params | % | runs | '
                  f'{metric} mean ± std | seeds | min / run |', '|---|---:|---:|---:|---:|---|---:|']
        for method in names:
            runs = rows[(task, method)]
            values = [TASKS[task]['to_percent'] * r['metrics'][metric] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            b = runs[0]['budget']
            entry = dict(task=task, method=method, n=len(runs), mean=statistics.mean(values), std=std,
                         values=values, seeds=[r['seed'] for r in runs], budget=b,
                         minutes=statistics.mean(r['minutes'] for r in runs))
            summary.append(entry)
            lines.append(f'| {method} | {b["backbone_trainable"]:,} | {b["percent"]:.2f} | {len(runs)} | '
                         f'{entry["mean"]:.2f} ± {std:.2f} | {", ".join(map(str, entry["seeds"]))} | '
                         f'{entry["minutes"]:.1f} |')
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    table = '\n'.join(lines).strip() + '\n'
    (out / 'summary.md').write_text(table)
    plot_sweeps(summary, out / 'sweeps.png')
    return table


def _sweep_point(method: str) -> tuple[str, float] | None:
    """``('rank', 8.0)`` for the sweep run ``flora-rank8``; None for a grid method."""
    for key in SWEEPS:
        prefix = f'flora-{key}'
        if method.startswith(prefix):
            return key, float(method[len(prefix):])
    return None


def _method_order(method: str) -> tuple:
    point = _sweep_point(method)
    return (0, METHODS.index(method), 0.0) if point is None else (1, point[0], point[1])


def plot_sweeps(summary: list[dict], path: Path) -> None:
    """FLoRA rank / scale sweeps (paper Fig. 3 / 5): the metric against the swept value, with the grid's
    LoRA / DoRA / FLoRA means of the same task as reference lines. Nothing is written without sweep runs."""
    sweeps = {}
    for entry in summary:
        point = _sweep_point(entry['method'])
        if point is not None:
            sweeps.setdefault(point[0], []).append((point[1], entry))
    if not sweeps:
        return
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.2 * len(sweeps), 3.6), squeeze=False)
    for ax, (key, points) in zip(axes[0], sorted(sweeps.items())):
        points.sort(key=lambda p: p[0])
        task = points[0][1]['task']
        seeds = sorted({seed for _, entry in points for seed in entry['seeds']})
        ax.errorbar([p[0] for p in points], [p[1]['mean'] for p in points], [p[1]['std'] for p in points],
                    marker='o', capsize=3, label=f'FLoRA sweep (seeds {seeds})')
        for value, entry in points:
            ax.annotate(f"{entry['budget']['backbone_trainable'] / 1e3:.0f}k", (value, entry['mean']), fontsize=7,
                        textcoords='offset points', xytext=(0, 6), ha='center')
        grid = {e['method']: e for e in summary if e['task'] == task and e['method'] in ('lora', 'dora', 'flora')}
        for (method, entry), style in zip(sorted(grid.items()), ('--', ':', '-.')):
            ax.axhline(entry['mean'], linestyle=style, color='grey', label=f"{method} (grid, n={entry['n']})")
        ax.set_xscale('log', base=2)
        ax.set_xlabel(f'FLoRA {key}' + (' (s fixed at 4)' if key == 'rank' else ' (rank solved to LoRA budget)'))
        ax.set_ylabel(f"{TASKS[task]['metric']} (%)")
        ax.legend(fontsize=7)
    fig.suptitle('FLoRA sweeps on the DOTA-style task (labels: trainable backbone parameters)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plan(args) -> list[tuple[str, str, dict, int]]:
    """``(task, run name, backbone overrides, seed)`` of every run asked for."""
    runs = []
    if args.sweep:
        key, values = next(iter(SWEEPS[args.sweep].items()))
        for value in values:
            backbone = method_backbone('flora', 'dota', args.lora_rank, **{key: value})
            for seed in args.seeds or (0, ):
                runs.append(('dota', f'flora-{key}{value:g}_s{seed}', backbone, seed))
        return runs
    for task in args.tasks:
        for method in args.methods:
            backbone = method_backbone(method, task, args.lora_rank)
            for seed in args.seeds or DEFAULT_SEEDS[task]:
                runs.append((task, f'{method}_s{seed}', backbone, seed))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, help='default: 3 on dota, 1 on coco / ade20k')
    parser.add_argument('--lora-rank', type=int, default=2,
                        help='LoRA / DoRA rank (2 on atto: ~7%% of the backbone, like r=8 on ConvNeXt-V2-L)')
    parser.add_argument('--iters', type=int, help='training iterations per run (default: 600 on dota, 400 else)')
    parser.add_argument('--sweep', choices=list(SWEEPS), help='FLoRA rank or scale sweep on dota instead of the grid')
    parser.add_argument('--out', default='results/reproduction')
    parser.add_argument('--base-checkpoint', default=DEFAULT_CHECKPOINT, help='pretrained base (built if missing)')
    parser.add_argument('--quick', action='store_true', help='tiny data and 2 iterations per run (smoke test)')
    parser.add_argument('--aggregate-only', action='store_true')
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.aggregate_only:
        base_ckpt = (ROOT / args.base_checkpoint).resolve()
        ensure_base(base_ckpt, out / 'pretrain_base.log')
        failed = [name for task, name, backbone, seed in plan(args)
                  if run_one(out, task, name, backbone, seed, 2 if args.quick else args.iters or TASKS[task]['iters'],
                             args.quick, base_ckpt) is None]
        if failed:
            print(f'{len(failed)} runs failed: {failed}')
    print(aggregate(out))
    if not args.aggregate_only and failed:
        sys.exit(1)


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Tune an mm config's hyperparameters on its validation split with Optuna (the library:
``flora_mm.engine.tune``). Each trial trains the config with ``tools/train.py``'s command line (``--nproc N``: under
torchrun, as ``dist_train.sh``).

Examples::

    # TPE over the backbone learning-rate multiplier and FLoRA's scale, 20 trials
    tools/tune.py configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py --n-trials 20 \\
        --param backbone_lr_mult=log:0.1:10 model.backbone.adapter.scale=log:0.5:32
    # exactly this grid (the same number of trials for every method), three paired seeds per point
    tools/tune.py CONFIG --grid backbone_lr_mult=0.25,0.5,1,2,4 --seeds 0 1 2
    # a log grid a factor 4 apart, extended one point at a time while its best value sits at an edge (at most 4)
    tools/tune.py CONFIG --grid backbone_lr_mult=0.0625,0.25,1,4,16 --extend 4
    # one study, several processes / machines: the same command with a shared storage
    tools/tune.py CONFIG ... --storage postgresql://host/db --study-name coco-flora

A killed study continues when the same command is run again. The study refuses a config whose validation data is
its test data.
"""
import argparse
import os
from pathlib import Path

from mmengine.config import DictAction

import flora_mm.mm  # noqa: F401
from flora_mm.engine.tune import (LR_MULT, PRUNERS, SearchParam, Study, StudySettings, edge_extension, grid_results,
                                  run_extended_grid, subprocess_launcher)



def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--param', nargs='+', default=[], metavar='PATH=KIND:...',
                        help=f'sampled dimensions: PATH=log:LOW:HIGH | float:LOW:HIGH | int:LOW:HIGH | choice:A,B; '
                             f'PATH a dotted config path or {LR_MULT} (default: {LR_MULT}=log:0.1:10)')
    parser.add_argument('--grid', nargs='+', default=[], metavar='PATH=V1,V2',
                        help='grid mode: run exactly these values (all combinations), each once')
    parser.add_argument('--extend', type=int, default=0, metavar='N',
                        help='grid mode, one numeric parameter: while the best value is at an edge of the grid, add '
                             'the next point beyond it (the grid\'s own step), at most N points')
    parser.add_argument('--n-trials', type=int, help='finished trials wanted (sampled mode; default 20)')
    parser.add_argument('--metric', help='validation metric (default: from val_evaluator, e.g. coco/bbox_mAP)')
    parser.add_argument('--direction', choices=['maximize', 'minimize'], default='maximize')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='training seeds per trial (mean)')
    parser.add_argument('--sampler-seed', type=int, default=0)
    parser.add_argument('--pruner', choices=['auto', *PRUNERS], default='auto',
                        help='auto: median when the schedule validates more than once')
    parser.add_argument('--fixed-budget', action='store_true',
                        help="solve the adapter's rank per trial to the config adapter's parameter budget")
    parser.add_argument('--work-dir', type=Path, help='study folder (default: work_dirs/tune/<config name>)')
    parser.add_argument('--storage', help='Optuna storage URL (default: sqlite:///WORK_DIR/study.db)')
    parser.add_argument('--study-name', help='default: the config name')
    parser.add_argument('--nproc', type=int, default=1, help='processes per trial (torchrun, as tools/dist_train.sh)')
    parser.add_argument('--threads', type=int, help='OMP/MKL threads of each trial (fixed threads: deterministic)')
    parser.add_argument('--heartbeat', type=int, default=30, help='seconds; a trial silent for 3 is failed, re-run')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='fixed overrides for every trial, e.g. train_cfg.val_interval=2')
    args = parser.parse_args(argv)
    if args.param and args.grid:
        parser.error('give --param (sampled) or --grid, not both')
    if args.extend and not args.grid:
        parser.error('--extend extends a grid: give --grid PATH=V1,V2,...')
    return args


def main(argv=None):
    args = parse_args(argv)
    specs = args.grid or args.param or [f'{LR_MULT}=log:0.1:10']
    config = Path(args.config)
    settings = StudySettings(
        config=config, work_dir=args.work_dir or Path('work_dirs/tune') / config.stem,
        params=[SearchParam.parse(s) for s in specs], n_trials=args.n_trials or (None if args.grid else 20),
        metric=args.metric, direction=args.direction, seeds=tuple(args.seeds), sampler_seed=args.sampler_seed,
        pruner=args.pruner, storage=args.storage, study_name=args.study_name, cfg_options=dict(args.cfg_options),
        heartbeat=args.heartbeat, fixed_budget=args.fixed_budget)
    env = {k: str(args.threads) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')} if args.threads else None
    launch = subprocess_launcher(args.nproc, cwd=Path(os.getcwd()), env=env)
    if args.extend:
        grid = run_extended_grid(settings, launch, args.extend)
        print('\n'.join(f'{grid["param"]}={k}: {v}' for k, v in grid['results'].items()))
        if 'selected' in grid:
            print(f'[tune] selected over the grid and {len(grid["extensions"])} extension(s): {grid["param"]}='
                  f'{grid["selected"]:g}, {grid["metric"]} {grid["value"]:.4f} -> {grid["best_config"]}')
        _warn_at_edge(grid.get('at_edge', False), f'after {args.extend} extension(s); raise --extend or widen the grid')
        return
    study = Study(settings, launch)
    print(f'[tune] study {study.name!r} in {study.storage_url}: {study.n_trials} trials, metric {study.metric} '
          f'({settings.direction}), pruner {study.pruner}')
    study.optimize()
    summary = study.finish()
    print(study.table())
    if 'best_trial' in summary:
        print(f'[tune] best: trial {summary["best_trial"]} {study.metric} {summary["best_value"]:.4f} '
              f'{summary["best_params"]} -> {summary["best_config"]}')
    print(f'[tune] plots: {", ".join(summary["plots"]) or "none (no complete trial)"}')
    if settings.grid and len(settings.params) == 1 and settings.params[0].numeric_grid and len(study.finished()) > 1:
        _warn_at_edge(edge_extension(grid_results([study]), settings.direction) is not None,
                      '(--extend N adds points beyond it)')


def _warn_at_edge(at_edge: bool, advice: str) -> None:
    if at_edge:
        print(f'[tune] WARNING: the best value is at an edge of the grid: it is not an optimum {advice}')

if __name__ == '__main__':
    main()

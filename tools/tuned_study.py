#!/usr/bin/env python
"""The tuned, pre-registered comparison (docs/preregistration.md; the library: flora_mm.engine.comparison).

    tools/tuned_study.py budgets [--write docs/preregistration.md]  # the pre-registration's budget table
    tools/tuned_study.py validate --tasks coco --methods flora lora   # validation grids (resumable)
    tools/tuned_study.py curves [--write README.md] [--plot]      # validation curves and selections so far
    tools/tuned_study.py test --tasks coco                        # test split, selected settings only
    tools/tuned_study.py test --tasks coco --default              # test split at the default x1 (tuned vs default)
    tools/tuned_study.py batch [--dry-run]                        # every test-split run left, in A4's order
    tools/tuned_study.py report [--write docs/tuned_comparison.md]  # intervals, Holm, the claims' verdicts
    tools/tuned_study.py report --readme README.md                # also README's ranking per task and the claims
    tools/tuned_study.py progress [--write docs/tuned_comparison.md]  # runs done / to run, hours left
    tools/tuned_study.py defaults [--write docs/tuned_comparison.md]  # each method's lr_mult from the curves

One training process at a time (2 threads, rule-based routes); each finished run is written to
results/tuned/validation/<task>/<method>/ at once, so a killed batch loses at most the run in progress.
"""
import argparse
from pathlib import Path

from flora_mm import docblocks
from flora_mm.engine import comparison
from flora_mm.engine.comparison import (METHODS, UNTUNED, NoInteriorOptimum, batch_order, budget_table, curves_table,
                                        headline, plot_curves, progress_table, report, run_test_split,
                                        run_validation, test_methods, test_order, test_run_path)
from flora_mm.engine.defaults import defaults_table
from flora_mm.engine.targets import TASKS, ensure_task_data

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command',
                        choices=['budgets', 'validate', 'curves', 'test', 'batch', 'report', 'progress', 'defaults'])
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--methods', nargs='+', choices=list(METHODS),
                        help='default: every tuned method (validate), every method (test)')
    parser.add_argument('--seeds', type=int, nargs='+', help='test: these seeds (default: the pre-registered ones)')
    parser.add_argument('--repeat', type=int, default=0, help='test: a same-seed repeat (1, 2...), to show determinism')
    parser.add_argument('--default', action='store_true',
                        help='test: at the default lr_mult 1 instead of the selected one (the methods that selected '
                             'another; seeds 0-2), for the pre-registered tuned-vs-default table')
    parser.add_argument('--dry-run', action='store_true', help='batch: list the runs left in their order, run none')
    parser.add_argument('--out', type=Path, default=ROOT / 'results' / 'tuned')
    parser.add_argument('--quick', action='store_true', help='tiny data and schedule (smoke test)')
    parser.add_argument('--plot', action='store_true',
                        help='curves: also draw them, OUT/plots/<task>_curves.png (one panel per family of methods)')
    parser.add_argument('--write', type=Path,
                        help='budgets / curves / report / progress / defaults: rewrite the generated block of this '
                             'document')
    parser.add_argument('--readme', type=Path,
                        help='report: also rewrite the "Which method?" block (the ranking and the claims) of this file')
    args = parser.parse_args()
    if args.command == 'budgets':
        table = budget_table(ROOT, tuple(args.tasks))
        if args.write:
            docblocks.replace_block(args.write, table + '\n', 'tools/tuned_study.py', 'budgets')
        print(table)
    elif args.command == 'curves':
        table = curves_table(args.out, tuple(args.tasks))
        if args.write:
            docblocks.replace_block(args.write, table + '\n', 'tools/tuned_study.py', 'curves')
        print(table)
        for path in plot_curves(args.out, tuple(args.tasks), args.out / 'plots') if args.plot else ():
            print(f'[tuned] {path}')
    elif args.command == 'report':
        comparison.RESAMPLED_CACHE = args.out / '.cache' / 'resampled'  # only the runs added since the last report
        text = report(args.out, tuple(args.tasks))
        if args.write:
            docblocks.replace_block(args.write, text + '\n', 'tools/tuned_study.py', 'report')
        print(text)
        if args.readme:  # the same process: every run's resampled metric is computed once for both
            docblocks.replace_block(args.readme, headline(args.out, ROOT, tuple(args.tasks)) + '\n',
                                    'tools/tuned_study.py', 'headline')
    elif args.command == 'defaults':
        table = defaults_table(args.out, tuple(args.tasks))
        if args.write:
            docblocks.replace_block(args.write, table + '\n', 'tools/tuned_study.py', 'defaults')
        print(table)
    elif args.command == 'progress':
        table = progress_table(args.out, tuple(args.tasks))
        if args.write:
            docblocks.replace_block(args.write, table + '\n', 'tools/tuned_study.py', 'progress')
        print(table)
    elif args.command == 'batch':  # the whole test phase, resumable: a finished run's file is never redone
        order = batch_order(args.out, tuple(args.tasks))
        left = [run for run in order if not test_run_path(args.out, **run._asdict()).exists()]
        print(f'[tuned] {len(order) - len(left)} of {len(order)} test-split runs done, {len(left)} left '
              f'(docs/preregistration.md, amendment A4: the order)', flush=True)
        for i, run in enumerate(left):
            print(f'[tuned] {i + 1}/{len(left)} {run.setting} {run.task}/{run.method} seed {run.seed}'
                  + (f' repeat {run.repeat}' if run.repeat else ''), flush=True)
            if args.dry_run:
                continue
            if i == 0 or run.task != left[i - 1].task:
                ensure_task_data(run.task, ROOT, args.quick)
            done = run_test_split(run.task, run.method, run.seed, ROOT, args.out, quick=args.quick,
                                  repeat=run.repeat, setting=run.setting)
            print(f'[tuned] test {done["metric"]} {done["value"]:.4f} (lr_mult {done["lr_mult"]:g}, '
                  f'{done["minutes"]:.1f} min)', flush=True)
    elif args.command == 'test':
        for task in args.tasks:
            ensure_task_data(task, ROOT, args.quick)
            setting = 'default' if args.default else 'tuned'
            for seed, method in test_order(args.methods or test_methods(args.out, task, setting), setting, args.seeds):
                run = run_test_split(task, method, seed, ROOT, args.out, quick=args.quick, repeat=args.repeat,
                                     setting=setting)
                print(f'[tuned] {task}/{method} seed {seed} ({setting}, lr_mult {run["lr_mult"]:g}): test '
                      f'{run["metric"]} {run["value"]:.4f}', flush=True)
    else:
        for task in args.tasks:
            ensure_task_data(task, ROOT, args.quick)
            for method in args.methods or [m for m in METHODS if m not in UNTUNED]:
                try:
                    choice = run_validation(task, method, ROOT, args.out, quick=args.quick)
                except NoInteriorOptimum as err:  # pre-registered: reported, not tested; the other grids go on
                    print(f'[tuned] {err}', flush=True)
                    continue
                print(f'[tuned] {task}/{method}: selected lr_mult {choice:g}', flush=True)
        print(curves_table(args.out, tuple(args.tasks)))


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""The untuned paired study (docs/reproduction.md): every method, paired seeds, one JSON per run. The study and
what it does: :mod:`flora_mm.engine.paired_study` (``tools/reproduce.py -h``).
"""
import argparse
import concurrent.futures
import os
from pathlib import Path

from flora_mm.engine import paired_study
from flora_mm.engine.paired_study import GRID, MECHANISMS, METHODS, aggregate, planned_runs, run_one
from flora_mm.engine.targets import TASKS, ensure_task_data

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=paired_study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument('--methods', nargs='+', default=list(GRID), choices=list(METHODS),
                        help='default: the grid (mechanism variants with --mechanisms)')
    parser.add_argument('--mechanisms', nargs='+', default=[], choices=list(MECHANISMS),
                        help='add the variants of these mechanism comparisons (each runs on its own task)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument('--repeat', type=int, default=0, help='k > 0: run again as repeat k (noise measurement)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at a time, each with cores / jobs CPU threads (OMP_NUM_THREADS overrides)')
    parser.add_argument('--out', type=Path, default=ROOT / 'results' / 'adaptation')
    parser.add_argument('--root', type=Path, default=ROOT, help='where the target data goes (default: the repo)')
    parser.add_argument('--quick', action='store_true', help='tiny data, 1-2 iterations per run (smoke test)')
    parser.add_argument('--aggregate-only', action='store_true')
    parser.add_argument('--plots', type=Path, help='also draw per-seed plots into this folder')
    parser.add_argument('--doc', type=Path, help="also replace this page's generated summary block")
    parser.add_argument('--readme', type=Path, help="also replace this page's generated headline table")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    out, root = args.out.resolve(), args.root.resolve()
    if not args.aggregate_only:
        methods = list(dict.fromkeys([*args.methods, *(v for m in args.mechanisms for v in MECHANISMS[m]['variants'])]))
        plan = planned_runs(args.tasks, methods, args.seeds)
        for task in dict.fromkeys(task for task, _, _ in plan):
            ensure_task_data(task, root, args.quick)  # before the runs: parallel runs must not generate it twice
        threads = int(os.environ.get('OMP_NUM_THREADS') or max(1, (os.cpu_count() or 1) // args.jobs))
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, out, task, method, seed, args.repeat, args.quick, root, threads, ROOT)
                       for task, method, seed in plan]
            for future in futures:
                future.result()  # re-raises the first failure (the others finish)
    print(aggregate(out, plots=args.plots, doc=args.doc, readme=args.readme))


if __name__ == '__main__':
    main()

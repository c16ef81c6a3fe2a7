#!/usr/bin/env python
"""The demo: adapting a detector to a new domain on CPU, FLoRA against the frozen backbone and full fine-tuning
(the library and what it does: :mod:`flora_mm.engine.demo`; ``tools/demo.py -h``).

    tools/demo.py                                   # the demo (make demo)
    tools/demo.py --seed 1 --work-dir work_dirs/demo_seed1
    tools/demo.py --spread results/demo/seed*.json  # mean / spread of several seeds' summaries (markdown)
    tools/demo.py --cfg-options model.backbone.adapter.type=SSB   # another adapter in FLoRA's place
"""
import argparse
from pathlib import Path

from mmengine.config import DictAction

from flora_mm.engine import demo
from flora_mm.engine.demo import ZERO_SHOT, run, spread, table

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', type=Path, default=ROOT / 'work_dirs' / 'demo')
    parser.add_argument('--seed', type=int, default=0, help='data order and any new-layer initialisation')
    parser.add_argument('--no-picture', action='store_true')
    parser.add_argument('--root', type=Path, default=ROOT, help='where data/target_coco goes (default: the repo)')
    parser.add_argument('--quick', action='store_true', help='tiny data, one epoch per run (smoke test)')
    parser.add_argument('--runs', nargs='+', metavar='NAME',
                        help=f'only these runs (default: all: {ZERO_SHOT}, Base, FLoRA or the --cfg-options adapter, '
                             f'Full)')
    parser.add_argument('--spread', type=Path, nargs='+', help='summarise these summary.json (or work dirs) instead')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides of the adapted run, e.g. model.backbone.adapter.type=IA3')
    args = parser.parse_args()
    if args.spread:
        print(spread(args.spread))
        return
    work_dir = args.work_dir.resolve()
    try:
        summary = run(work_dir, args.root.resolve(), args.seed, args.quick, args.runs, args.cfg_options,
                      picture=not args.no_picture)
    except ValueError as err:
        parser.error(f'--runs: {err}')
    print('\n' + '=' * 78)
    print(f'Domain adaptation of the shipped source Mask R-CNN (ConvNeXt-V2-atto) to the shifted target domain, '
          f'seed {args.seed}, {summary["minutes"]:.1f} min in all; COCO mAP (%) on {summary["data"]["num_val"]} target '
          f'images')
    print(table(summary))
    shown = work_dir.relative_to(ROOT) if work_dir.is_relative_to(ROOT) else work_dir
    print(f'summary: {shown / "summary.json"}' + (f'; predictions: {shown / summary["picture"]}'
                                                  if 'picture' in summary else ''))
    print('=' * 78)


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Regenerate the shipped source task models (the library and what it does: :mod:`flora_mm.weights.source_models`;
``tools/make_source_models.py -h``).
"""
import argparse
from pathlib import Path

from flora_mm.weights import source_models as library
from flora_mm.weights.source_models import REPO, TASKS, make


def main():
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('tasks', nargs='+', choices=list(TASKS))
    parser.add_argument('--root', type=Path, default=REPO, help='where data/ and work_dirs/ go (default: the repo)')
    parser.add_argument('--out-dir', type=Path, default=REPO / 'flora_mm' / 'weights')
    parser.add_argument('--num-train', type=int, help='source training images (default: the shipped setting)')
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--img-size', type=int)
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE', help='passed to tools/train.py')
    parser.add_argument('--export-only', action='store_true', help='export the finished run in the work dir')
    args = parser.parse_args()
    overrides = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val,
                                       img_size=args.img_size).items() if v is not None}
    cfg_options = dict(option.split('=', 1) for option in args.cfg_options)
    for task in args.tasks:
        make(task, args.root.resolve(), args.out_dir.resolve(), cfg_options, overrides, args.export_only)


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Plot the paper's Fig. 4 for one or more runs: ||s*dW||_F and the feature amplification factor over training.

    tools/plot_delta_stats.py WORK_DIR [WORK_DIR ...] [--labels FLoRA LoRA DoRA] [--out delta_stats.png]
                              [--layer backbone.stages.2.blocks.0.mlp.fc1]

Reads the ``delta/*`` scalars that ``DeltaWeightStatsHook`` wrote to each work dir's ``vis_data/scalars.json``
(all runs in the work dir, so resumed training continues its curve); plots the mean over adapted layers, or one
layer with ``--layer``. Prints the last value of each curve.
"""
import argparse
from pathlib import Path

from flora_mm.engine.logs import plot_delta_curves


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--labels', nargs='+', help='legend labels (default: the work dir names)')
    parser.add_argument('--layer', help='one adapted layer instead of the mean over layers')
    parser.add_argument('--out', default='delta_stats.png')
    args = parser.parse_args()
    labels = args.labels or [Path(w).name for w in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        parser.error(f'{len(labels)} labels for {len(args.work_dirs)} work dirs')
    print(f'wrote {plot_delta_curves(args.work_dirs, labels, args.out, args.layer)}')


if __name__ == '__main__':
    main()

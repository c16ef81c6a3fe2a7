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


from flora_mm.engine.logs import read_scalars, scalar_curve

PANELS = (('fro', r'$\|s\,\Delta W\|_F$'), ('amp', r'amplification $\|\Delta W\|_F / \|U^T W V\|_F$'))


def curves(work_dir: str, layer: str | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """``{'fro': (steps, values), 'amp': (steps, values)}`` of one work dir."""
    records = read_scalars(work_dir)
    out = {kind: scalar_curve(records, f'delta/{layer}/{kind}' if layer else f'delta/mean_{kind}')
           for kind, _ in PANELS}
    if not out['fro'][0]:
        what = f'layer {layer!r}' if layer else 'the mean over layers'
        raise ValueError(f'{work_dir}: no delta/ scalars for {what}; was DeltaWeightStatsHook in custom_hooks?')
    return out


def plot(work_dirs: list[str], labels: list[str], out: str, layer: str | None = None) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for work_dir, label in zip(work_dirs, labels):
        data = curves(work_dir, layer)
        for ax, (kind, title) in zip(axes, PANELS):
            steps, values = data[kind]
            ax.plot(steps, values, marker='.', label=label)
            ax.set_title(title)
            if values:
                print(f'{label}: {kind} {values[-1]:.4g} at iteration {steps[-1]}')
    for ax in axes:
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f'Delta W statistics ({layer or "mean over adapted layers"})')
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


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
    print(f'wrote {plot(args.work_dirs, labels, args.out, args.layer)}')


if __name__ == '__main__':
    main()

"""Reading what mmengine's LocalVisBackend wrote: ``WORK_DIR/<timestamp>/vis_data/scalars.json``."""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path

__all__ = ['DELTA_PANELS', 'delta_curves', 'plot_delta_curves', 'read_scalars', 'scalar_curve']


def read_scalars(work_dir: str | Path, latest_only: bool = False) -> list[dict]:
    """The scalar records (one dict per logged step) of the runs in ``work_dir``, oldest run first, so a run
    resumed in a later sitting continues its predecessor. ``latest_only`` keeps only the newest run."""
    runs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'), key=osp.getmtime)
    if not runs:
        raise FileNotFoundError(f'no */vis_data/scalars.json under {work_dir}: did training run?')
    return [json.loads(line) for run in (runs[-1:] if latest_only else runs)
            for line in run.read_text().splitlines() if line.strip()]


def scalar_curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key``; a step logged twice (a resumed run) keeps its latest value."""
    points = {r['step']: r[key] for r in records if key in r}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


#: The two curves of the paper's Fig. 4 that ``DeltaWeightStatsHook`` logs (``delta/*`` scalars): key, axis title.
DELTA_PANELS = (('fro', r'$\|s\,\Delta W\|_F$'), ('amp', r'amplification $\|\Delta W\|_F / \|U^T W V\|_F$'))


def delta_curves(work_dir: str, layer: str | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """``{'fro': (steps, values), 'amp': (steps, values)}`` of one work dir: the mean over adapted layers, or one
    ``layer``."""
    records = read_scalars(work_dir)
    out = {kind: scalar_curve(records, f'delta/{layer}/{kind}' if layer else f'delta/mean_{kind}')
           for kind, _ in DELTA_PANELS}
    if not out['fro'][0]:
        what = f'layer {layer!r}' if layer else 'the mean over layers'
        raise ValueError(f'{work_dir}: no delta/ scalars for {what}; was DeltaWeightStatsHook in custom_hooks?')
    return out


def plot_delta_curves(work_dirs: list[str], labels: list[str], out: str, layer: str | None = None) -> Path:
    """The paper's Fig. 4 for ``work_dirs`` (one line each, ``labels``) into the PNG ``out``; prints each curve's
    last value."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for work_dir, label in zip(work_dirs, labels):
        data = delta_curves(work_dir, layer)
        for ax, (kind, title) in zip(axes, DELTA_PANELS):
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

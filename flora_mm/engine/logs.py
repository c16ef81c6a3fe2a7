"""Reading what mmengine's LocalVisBackend wrote: ``WORK_DIR/<timestamp>/vis_data/scalars.json``."""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path

__all__ = ['read_scalars', 'scalar_curve']


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

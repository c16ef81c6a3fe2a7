"""Running a config as a subprocess of flora_mm's train / test command lines (:mod:`flora_mm.cli`, what
``tools/train.py`` / ``tools/test.py`` run: every run uses the entry point a user types) and reading back its final metrics: the one way the demo, the source-model
export and the adaptation runs launch training."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cli import TEST, TRAIN, command
from .logs import read_scalars

__all__ = ['cli_options', 'last_checkpoint', 'last_validation', 'test_config', 'train_config']


def cli_options(overrides: Mapping[str, Any]) -> list[str]:
    """``--cfg-options`` words for dotted-key overrides (``{'model.backbone.adapter': None}`` ->
    ``['model.backbone.adapter=None']``)."""
    return [f'{k}={v}' for k, v in overrides.items()]


def _run(cmd: list[str], cwd: Path | None, log: Path | None, env: Mapping[str, str] | None = None) -> None:
    env = None if env is None else {**os.environ, **env}
    if log is None:
        subprocess.run(cmd, cwd=cwd, check=True, env=env)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open('w') as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(cmd[2:4])} failed (exit {proc.returncode}); see {log}')


def train_config(config: str | Path, work_dir: Path, overrides: Mapping[str, Any] | None = None,
                 metric: str | None = None, cwd: Path | None = None, log: Path | None = None,
                 env: Mapping[str, str] | None = None) -> dict:
    """Train ``config`` (``tools/train.py``'s command line) into ``work_dir``; the last validation record of the run
    (or ``{}`` if ``metric`` is None). ``cwd`` resolves the config's relative data paths (default: the current
    directory); ``log`` captures the output instead of showing it; ``env`` adds environment variables (e.g.
    ``OMP_NUM_THREADS``)."""
    args = [config, '--work-dir', work_dir] + (['--cfg-options', *cli_options(overrides)] if overrides else [])
    _run(command(TRAIN, args), cwd, log, env)
    return {} if metric is None else last_validation(work_dir, metric)


def last_validation(work_dir: Path, metric: str) -> dict:
    """The last validation record (holding ``metric``) of the newest run in ``work_dir``."""
    val = [r for r in read_scalars(work_dir, latest_only=True) if metric in r]
    if not val:
        raise RuntimeError(f'the newest run in {work_dir} has no validation result with {metric!r}')
    return val[-1]


def test_config(config: str | Path, checkpoint: str, work_dir: Path,
                overrides: Mapping[str, Any] | None = None, cwd: Path | None = None,
                log: Path | None = None, env: Mapping[str, str] | None = None, split: str = 'test',
                predictions: Path | None = None) -> dict:
    """Evaluate ``checkpoint`` (``tools/test.py``'s command line) on the config's ``split`` ('test' or 'val'); the
    metrics it dumped (``WORK_DIR/<time>/<time>.json``). ``predictions``: also dump the per-image predictions there
    (.pkl)."""
    args = [config, checkpoint, '--work-dir', work_dir, '--split', split] + \
        (['--out', predictions] if predictions is not None else []) + \
        (['--cfg-options', *cli_options(overrides)] if overrides else [])
    before = set(work_dir.glob('*/*.json'))
    _run(command(TEST, args), cwd, log, env)
    new = sorted(set(work_dir.glob('*/*.json')) - before)
    if not new:
        raise RuntimeError(f'{TEST} wrote no metrics under {work_dir}')
    return json.loads(new[-1].read_text())


def last_checkpoint(work_dir: Path) -> str:
    """The checkpoint a finished run in ``work_dir`` saved last (mmengine's ``last_checkpoint`` file)."""
    return (work_dir / 'last_checkpoint').read_text().strip()

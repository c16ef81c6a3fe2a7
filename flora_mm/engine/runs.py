"""Running a config as a subprocess of flora_mm's train / test command lines (:mod:`flora_mm.cli`, what
``tools/train.py`` / ``tools/test.py`` run: every run uses the entry point a user types) and reading back its final
metrics: the one way the demo, the source-model export, the tuning trials and the studies launch training; and the
git state a run file records."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ..cli import TEST, TRAIN, command
from .logs import read_scalars

__all__ = ['cli_options', 'environment', 'git', 'last_checkpoint', 'last_validation', 'run_logged', 'test_config',
           'train_config']


def cli_options(overrides: Mapping[str, Any]) -> list[str]:
    """``--cfg-options`` words for dotted-key overrides (``{'model.backbone.adapter': None}`` ->
    ``['model.backbone.adapter=None']``)."""
    return [f'{k}={v}' for k, v in overrides.items()]


def git(repo: Path, *args: str) -> str:
    """``git ARGS`` in ``repo``, its stripped standard output ('' where git fails, e.g. outside a checkout)."""
    return subprocess.run(['git', *args], cwd=repo, capture_output=True, text=True).stdout.strip()


#: the distributions whose versions can change a run's arithmetic or its evaluation
ENVIRONMENT_PACKAGES = ('torch', 'torchvision', 'numpy', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation',
                        'mmrotate_dev', 'timm', 'opencv-python', 'pillow', 'pycocotools', 'scipy', 'shapely')


def _cpu_model(cpuinfo: Path = Path('/proc/cpuinfo')) -> str:
    """The CPU's model name (Linux: ``cpuinfo``'s 'model name'; elsewhere :func:`platform.processor`)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Where a run ran, as far as it can change the run's numbers: the CPU model, the instruction set torch
    dispatches its CPU kernels to (``AVX2``, ``AVX512``...: a different one changes the rounding, and a training run
    amplifies it), the Python version and the installed version of each of :data:`ENVIRONMENT_PACKAGES` (``None``
    where it is not installed). Same-seed runs are bit-identical only within one environment."""
    import torch
    versions = {}
    for name in ENVIRONMENT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return dict(cpu=_cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                python=platform.python_version(), packages=versions)


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env: Mapping[str, str] | None = None,
               preexec_fn=None) -> int:
    """Run ``cmd`` with stdout and stderr into the file ``log`` (``env`` added to this process's environment); its
    exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open('w') as f:
        return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              env=None if env is None else {**os.environ, **env}, preexec_fn=preexec_fn).returncode


def _run(cmd: list[str], cwd: Path | None, log: Path | None, env: Mapping[str, str] | None = None) -> None:
    if log is None:
        subprocess.run(cmd, cwd=cwd, check=True, env=None if env is None else {**os.environ, **env})
        return
    code = run_logged(cmd, log, cwd, env)
    if code:
        raise RuntimeError(f'{" ".join(cmd[2:4])} failed (exit {code}); see {log}')


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

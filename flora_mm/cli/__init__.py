"""flora_mm's command lines, shaped like mmdet's ``tools/train.py`` / ``tools/test.py``.

``tools/train.py`` and ``tools/test.py`` are these modules' ``main``; ``python -m flora_mm.cli.train CONFIG`` runs
the same from an installed package (no repository checkout needed). The library's runners (:mod:`flora_mm.engine.runs`,
the tuning and study runners) launch these modules, so they never need the repository's ``tools/``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ['command', 'torchrun_command']

TRAIN = 'flora_mm.cli.train'
TEST = 'flora_mm.cli.test'


def command(module: str, args: Sequence[str]) -> list[str]:
    """The command that runs ``module``'s command line with ``args`` in a fresh Python process."""
    return [sys.executable, '-m', module, *map(str, args)]


def torchrun_command(module: str, nproc: int, args: Sequence[str]) -> list[str]:
    """``module`` under torchrun with ``nproc`` processes per node, as ``tools/dist_train.sh`` starts it: the
    nodes from ``NNODES`` / ``NODE_RANK`` / ``MASTER_ADDR`` / ``PORT`` in the environment (default: one node)."""
    if nproc < 1:
        raise ValueError(f'nproc must be >= 1, got {nproc}')
    env = os.environ
    return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
            f'--nnodes={env.get("NNODES", 1)}', f'--node_rank={env.get("NODE_RANK", 0)}',
            f'--master_addr={env.get("MASTER_ADDR", "127.0.0.1")}', f'--master_port={env.get("PORT", 29500)}',
            '-m', module, *map(str, args), '--launcher', 'pytorch']

"""flora_mm's own pretrained weights, shipped inside the package and addressed by name (plain Python).

``flora_mm://NAME`` anywhere a checkpoint path goes -- ``init_cfg=dict(type='Pretrained',
checkpoint='flora_mm://convnextv2_atto_source')``, ``load_pretrained``, ``mmengine``'s ``CheckpointLoader``
(registered by :mod:`flora_mm.models.checkpoint`) -- resolves to the file in this folder after its SHA-256 is
checked against :data:`WEIGHTS`. Every entry states the command that regenerates the file; regeneration is
deterministic (same tensors, bit for bit, on the same torch build and thread count).

Licence: Apache-2.0, like the code: these weights are our own, trained only on synthetic data that flora_mm
generates (:mod:`flora_mm.data`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

__all__ = ['SCHEME', 'WEIGHTS', 'ShippedWeights', 'resolve', 'sha256']

SCHEME = 'flora_mm://'
FOLDER = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
    """One shipped checkpoint.

    Args:
        file: File name in this folder.
        sha256: Hex SHA-256 of the file.
        command: The command (run from the repository root) that regenerates the file bit for bit.
        minutes: How long that command took on 2 CPU cores.
        description: What the weights are.
        licence: Their licence.
    """
    file: str
    sha256: str
    command: str
    minutes: float
    description: str
    licence: str = 'Apache-2.0'

    @property
    def path(self) -> Path:
        return FOLDER / self.file


#: The shipped weights by name (``flora_mm://NAME``).
WEIGHTS: dict[str, ShippedWeights] = {
    'convnextv2_atto_source': ShippedWeights(
        file='convnextv2_atto_source.pth',
        sha256='2bf8a185e3e40c550e4b8599bf77722f4b99e6480aa92444bb07eb69afc8382f',
        command='python tools/pretrain_base.py --dtype fp16 --out flora_mm/weights/convnextv2_atto_source.pth',
        minutes=11.0,
        description='ConvNeXt-V2-atto body (timm names, fp16), pretrained by dense shape segmentation on the '
                    'synthetic source domain (flora_mm.data.source_scene): 1500 steps of 64 images at 64 px; '
                    'held-out metrics in convnextv2_atto_source.json'),
}


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve(uri: str) -> Path:
    """The verified local path of ``flora_mm://NAME``.

    Raises ``KeyError`` for an unknown name (listing the known ones), ``FileNotFoundError`` if the file is missing
    and ``ValueError`` if its SHA-256 is not the recorded one (both naming the command that regenerates it).
    """
    if not uri.startswith(SCHEME):
        raise ValueError(f'not a {SCHEME} address: {uri!r}')
    name = uri[len(SCHEME):]
    if name not in WEIGHTS:
        raise KeyError(f'no shipped weights named {name!r}; known: {sorted(WEIGHTS)}')
    entry = WEIGHTS[name]
    if not entry.path.exists():
        raise FileNotFoundError(f'{uri}: {entry.path} is missing; regenerate it with: {entry.command}')
    actual = sha256(entry.path)
    if actual != entry.sha256:
        raise ValueError(f'{uri}: {entry.path} has SHA-256 {actual}, expected {entry.sha256} (a corrupt or '
                         f'different file); regenerate it with: {entry.command}')
    return entry.path

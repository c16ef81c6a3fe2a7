"""flora_mm's own pretrained weights, shipped inside the package and addressed by name (plain Python).

``flora_mm://NAME`` anywhere a checkpoint path goes -- ``init_cfg=dict(type='Pretrained',
checkpoint='flora_mm://convnextv2_atto_source')``, ``load_pretrained``, ``mmengine``'s ``CheckpointLoader``
(registered by :mod:`flora_mm.models.checkpoint`) -- resolves to the file in this folder after its SHA-256 is
checked against :data:`WEIGHTS`. A *task model* (a detector or segmentor trained on the source domain with the
shipped backbone frozen) ships only what it adds -- neck and heads -- and names its backbone in ``base``:
:func:`load` returns the whole model's state dict, the base's tensors under ``backbone.``. Every entry states the
command that regenerates the file; regeneration is
deterministic (same tensors, bit for bit, on the same torch build and thread count).

Licence: Apache-2.0, like the code: these weights are our own, trained only on synthetic data that flora_mm
generates (:mod:`flora_mm.data`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

__all__ = ['SCHEME', 'WEIGHTS', 'ShippedWeights', 'load', 'resolve', 'sha256', 'sha256_text']

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
        base: Name of the shipped backbone this file extends (a task model stores only its neck and heads);
            :func:`load` adds the base's tensors under ``base_prefix``.
        base_prefix: Where the base's tensors go in the task model's state dict.
    """
    file: str
    sha256: str
    command: str
    minutes: float
    description: str
    licence: str = 'Apache-2.0'
    base: str | None = None
    base_prefix: str = 'backbone.'

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
    'mask_rcnn_atto_source_coco': ShippedWeights(
        file='mask_rcnn_atto_source_coco.pth',
        sha256='b1a293fef2d13c21ce970ecc67b4838fbc9a297129d296ca24a78509f169130f',
        command='python tools/make_source_models.py coco',
        minutes=31.0,  # wall clock while sharing the 2 cores with tests: ~13 min alone by its starting eta
        description='Mask R-CNN (light 64-channel FPN / RoI heads, fp16) on the frozen convnextv2_atto_source, '
                    'trained 12 epochs on 1024 images of the synthetic source domain in COCO format '
                    '(flora_mm.data.make_coco, shift=False; classes square / disc / triangle); source validation '
                    'bbox / segm mAP 88.3 / 90.5 (mask_rcnn_atto_source_coco.json). Holds neck and heads only',
        base='convnextv2_atto_source'),
    'oriented_rcnn_atto_source_dota': ShippedWeights(
        file='oriented_rcnn_atto_source_dota.pth',
        sha256='4f08b7922547159d12e90ae2a6d19569a7b572ba4a8918360f47291e5527880f',
        command='python tools/make_source_models.py dota',
        minutes=33.0,  # wall clock, paused (SIGSTOP) for ~16 min while other jobs ran: ~10 min of training
        description='Oriented R-CNN le90 (light 64-channel FPN / RoI heads, fp16) on the frozen '
                    'convnextv2_atto_source, trained 2400 iterations of 4 on 1024 images of the synthetic source '
                    'domain in DOTA-v1.0 format (flora_mm.data.make_dota, shift=False; plane / ship / '
                    'small-vehicle); source validation mAP 90.9 (oriented_rcnn_atto_source_dota.json). Holds neck '
                    'and heads only',
        base='convnextv2_atto_source'),
    'upernet_atto_source_ade20k': ShippedWeights(
        file='upernet_atto_source_ade20k.pth',
        sha256='1b8840eb73c7c4ebbe3d03d337691938ee9732be8f64b5aaaaecb584406fea83',
        command='python tools/make_source_models.py ade20k',
        minutes=2.5,
        description='UperNet (64-channel decode head, 32-channel auxiliary head, BN, fp16) on the frozen '
                    'convnextv2_atto_source, trained 1600 iterations of 4 on 1024 images of the synthetic source '
                    'domain in ADE20K layout (flora_mm.data.make_ade20k, shift=False; wall / building / sky / '
                    'floor / tree); source validation mIoU 93.5 (upernet_atto_source_ade20k.json). Holds the heads '
                    'only',
        base='convnextv2_atto_source'),
}


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a whole file, read ``chunk`` bytes at a time (the one file hash of flora_mm)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a text (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _name(uri: str) -> str:
    if not uri.startswith(SCHEME):
        raise ValueError(f'not a {SCHEME} address: {uri!r}')
    name = uri[len(SCHEME):]
    if name not in WEIGHTS:
        raise KeyError(f'no shipped weights named {name!r}; known: {sorted(WEIGHTS)}')
    return name


def load(uri: str, map_location=None) -> dict:
    """The state dict of ``flora_mm://NAME`` (verified), a task model's with its base backbone's tensors added.

    Raises ``ValueError`` if a task model's own file already holds keys under its base's prefix."""
    import torch
    entry = WEIGHTS[_name(uri)]
    state = torch.load(resolve(uri), map_location=map_location, weights_only=True)
    if entry.base is None:
        return state
    base = {entry.base_prefix + k: v for k, v in load(SCHEME + entry.base, map_location).items()}
    clash = sorted(set(base) & set(state))
    if clash:
        raise ValueError(f'{uri}: its file holds {len(clash)} tensors of its base {entry.base!r} ({clash[:3]}...)')
    return {**base, **state}


def resolve(uri: str) -> Path:
    """The verified local path of ``flora_mm://NAME``.

    Raises ``KeyError`` for an unknown name (listing the known ones), ``FileNotFoundError`` if the file is missing
    and ``ValueError`` if its SHA-256 is not the recorded one (both naming the command that regenerates it).
    """
    entry = WEIGHTS[_name(uri)]
    if not entry.path.exists():
        raise FileNotFoundError(f'{uri}: {entry.path} is missing; regenerate it with: {entry.command}')
    actual = sha256(entry.path)
    if actual != entry.sha256:
        raise ValueError(f'{uri}: {entry.path} has SHA-256 {actual}, expected {entry.sha256} (a corrupt or '
                         f'different file); regenerate it with: {entry.command}')
    return entry.path

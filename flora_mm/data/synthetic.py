"""Deterministic synthetic datasets in the real on-disk formats, read by the stock OpenMMLab dataset classes.

* :func:`make_coco` -- COCO instances JSON with polygon masks (mmdet ``CocoDataset``);
* :func:`make_dota` -- DOTA-v1.0 ``annfiles/*.txt`` with oriented boxes (mmrotate ``DOTADataset``);
* :func:`make_ade20k` -- ADE20K-style ``images/*.jpg`` + ``annotations/*.png`` (mmseg ``ADE20KDataset``).

Objects have class-specific shapes and colour tendencies on varied backgrounds (gradients and noise), enough
signal for a small model to learn visibly. Everything is drawn from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['COCO_CLASSES', 'DOTA_CLASSES', 'ADE_CLASSES', 'SOURCE_SHAPES', 'ensure_dataset', 'make_coco',
           'make_dota', 'make_ade20k', 'source_scene', 'split_streams']

COCO_CLASSES = ('square', 'disc', 'triangle')
#: A subset of DOTA-v1.0's class names (mmrotate's DOTADataset knows them).
DOTA_CLASSES = ('plane', 'ship', 'small-vehicle')
#: The first five ADE20K classes; PNG values are 1-based (0 = "other", ignored with reduce_zero_label).
ADE_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')

# Class colour tendencies (RGB), jittered per object.
_COLOURS = ((220, 60, 50), (60, 200, 80), (60, 90, 230))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = ((xx * math.cos(angle) + yy * math.sin(angle)) / max(h, w) + 1) / 2
    img = c0 * (1 - t[..., None]) + c1 * t[..., None] + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: tuple[int, int], count: int) -> None:
    """Unlabelled distractors: random thick lines and small random polygons in random colours."""
    h, w = size
    for _ in range(count):
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw.line([tuple(rng.uniform(0, (w, h))), tuple(rng.uniform(0, (w, h)))], fill=colour,
                      width=int(rng.integers(1, max(2, w // 40))))
        else:
            centre, radius = rng.uniform(0, (w, h)), rng.uniform(w / 40, w / 12)
            n = int(rng.integers(3, 8))
            t = np.sort(rng.uniform(0, 2 * math.pi, n))
            pts = np.stack([np.cos(t), np.sin(t)], 1) * radius * rng.uniform(0.4, 1.0, (n, 1)) + centre
            draw.polygon([tuple(p) for p in pts], fill=colour)


#: The target shift's strength (calibrated on the bracket, docs/adaptation.md): amplitude range of each of the two
#: stripe textures, sensor-noise sigma, and the probability that an object keeps its class colour.
TEXTURE_AMPLITUDE = (0.2, 0.45)
NOISE_SIGMA = 20.0
KEEP_CLASS_COLOUR = 0.5


def _texture(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Overlay a random sinusoidal texture (stripes of random frequency and orientation) and sensor noise."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    out = img.astype(float)
    for _ in range(2):
        theta, period = rng.uniform(0, math.pi), rng.uniform(3, 12)
        wave = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + rng.uniform(0, 6.3))
        out *= 1 + rng.uniform(*TEXTURE_AMPLITUDE) * wave[..., None]
    return np.clip(out + rng.normal(0, NOISE_SIGMA, out.shape), 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    base = np.array(_COLOURS[label % len(_COLOURS)], dtype=float)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 25, 3), 0, 255))


def _object_colour(rng: np.random.Generator, label: int, shift: bool) -> tuple[int, int, int]:
    """The class's colour tendency; with ``shift``, only for a share :data:`KEEP_CLASS_COLOUR` of the objects,
    the others in any colour (shape is then the only class cue)."""
    if shift and rng.random() >= KEEP_CLASS_COLOUR:
        return tuple(int(v) for v in rng.uniform(0, 255, 3))
    return _colour(rng, label)


#: What ``shift=True`` changes relative to ``shift=False`` (the source domain of the shipped task models), with the
#: same classes -- the way aerial or surveillance images differ from clean photographs:
SHIFT_DOC = """textures (two random sinusoidal stripe patterns multiply the whole image, amplitude
TEXTURE_AMPLITUDE each), sensor noise (NOISE_SIGMA), clutter (unlabelled random lines and blobs) and a weaker colour cue
(only a share KEEP_CLASS_COLOUR of the objects / regions keep their class colour)."""


def _rotate(points: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + np.asarray(centre)


def _regular(n: int, radius: float, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(t), np.sin(t)], 1) * radius


def _shape_polygon(kind: str, radius: float, angle: float, centre) -> np.ndarray:
    """Polygon (``[n, 2]`` pixel coordinates) of a shape of the given kind, rotated and centred."""
    if kind == 'square':
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * radius * 0.8
    elif kind == 'disc':
        pts = _regular(24, radius)
    elif kind == 'triangle':
        pts = _regular(3, radius)
    elif kind == 'pentagon':
        pts = _regular(5, radius)
    elif kind == 'hexagon':
        pts = _regular(6, radius)
    elif kind == 'star':
        outer, inner = _regular(5, radius), _regular(5, radius * 0.45, -math.pi / 2 + math.pi / 5)
        pts = np.stack([outer, inner], 1).reshape(-1, 2)
    elif kind == 'cross':
        a, b = radius, radius * 0.35
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b]])
    elif kind == 'diamond':
        pts = np.array([[0, -radius], [radius * 0.5, 0], [0, radius], [-radius * 0.5, 0]])
    else:
        raise ValueError(f'unknown shape {kind!r}')
    return _rotate(pts, angle, centre)


#: Shapes of the classification source domain used to pretrain the demo's base model.
SOURCE_SHAPES = ('square', 'disc', 'triangle', 'pentagon', 'hexagon', 'star', 'cross', 'diamond')


def _contrasting(rng: np.random.Generator, background: np.ndarray, min_dist: float = 120.0) -> tuple[int, ...]:
    """A random RGB colour whose L1 distance to the background's mean colour is at least ``min_dist``."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(100):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - mean).sum() >= min_dist:
            break
    return tuple(int(v) for v in colour)


def _place(rng, n: int, size: tuple[int, int], r_range: tuple[float, float], tries: int = 50):
    """Up to ``n`` non-overlapping (centre, radius) pairs inside the image."""
    h, w = size
    placed: list[tuple[tuple[float, float], float]] = []
    for _ in range(n):
        for _ in range(tries):
            r = rng.uniform(*r_range)
            c = (rng.uniform(r, w - r), rng.uniform(r, h - r))
            if all(math.dist(c, c2) > r + r2 + 2 for c2, r2 in placed):
                placed.append((c, r))
                break
    return placed


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def source_scene(rng: np.random.Generator, n: int, img_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the *source* domain used to pretrain the demo's base model: 1-3 non-overlapping shapes of
    :data:`SOURCE_SHAPES` per image, each in a random colour that contrasts with its background (plain, or
    gradient and noise), random size and rotation. Shape -- not colour -- is the only class cue.

    Returns ``uint8`` images ``[n, H, W, 3]`` and ``int64`` label maps ``[n, H, W]`` (0 = background,
    ``k + 1`` = ``SOURCE_SHAPES[k]``).
    """
    images = np.empty((n, img_size, img_size, 3), np.uint8)
    labels = np.zeros((n, img_size, img_size), np.int64)
    for i in range(n):
        if rng.random() < 0.5:
            bg = np.broadcast_to(rng.uniform(0, 255, 3).astype(np.uint8), (img_size, img_size, 3)).copy()
        else:
            bg = _background(rng, img_size, img_size)
        img, mask = Image.fromarray(bg), Image.new('L', (img_size, img_size), 0)
        for centre, radius in _place(rng, int(rng.integers(1, 4)), (img_size, img_size),
                                     (img_size / 8, img_size / 4)):
            label = int(rng.integers(len(SOURCE_SHAPES)))
            poly = [tuple(p) for p in _shape_polygon(SOURCE_SHAPES[label], radius, rng.uniform(0, 2 * math.pi),
                                                     centre)]
            ImageDraw.Draw(img).polygon(poly, fill=_contrasting(rng, bg))
            ImageDraw.Draw(mask).polygon(poly, fill=label + 1)
        images[i], labels[i] = np.asarray(img), np.asarray(mask)
    return images, labels


def make_coco(root: str | Path, num_train: int = 64, num_val: int = 16, img_size: int = 128,
              seed: int = 0, shift: bool = False, num_test: int = 0) -> Path:
    """Write ``root/{train2017,val2017}/*.jpg`` and ``root/annotations/instances_{split}.json`` (and ``test2017``
    with ``num_test`` images: a held-out test split, see :func:`split_streams`).

    ``shift``: a target domain far from the pretraining source (see :data:`SHIFT_DOC`)."""
    root = Path(root)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(COCO_CLASSES)]
    for split, count, rng in split_streams(seed, (('train2017', num_train), ('val2017', num_val)),
                                           ('test2017', num_test)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for idx in range(count):
            img = Image.fromarray(_background(rng, img_size, img_size))
            draw = ImageDraw.Draw(img)
            if shift:
                _clutter(rng, draw, (img_size, img_size), int(rng.integers(4, 10)))
            for centre, radius in _place(rng, int(rng.integers(1, 5)), (img_size, img_size),
                                         (img_size / 12, img_size / 5)):
                label = int(rng.integers(len(COCO_CLASSES)))
                poly = _shape_polygon(COCO_CLASSES[label], radius, rng.uniform(0, 2 * math.pi), centre)
                draw.polygon([tuple(p) for p in poly], fill=_object_colour(rng, label, shift))
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                annotations.append(dict(id=len(annotations) + 1, image_id=idx + 1, category_id=label + 1,
                                        segmentation=[[round(float(v), 2) for v in poly.ravel()]],
                                        area=_polygon_area(poly), iscrowd=0,
                                        bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)]))
            name = f'{idx:06d}.jpg'
            img = Image.fromarray(_texture(rng, np.asarray(img))) if shift else img
            img.save(root / split / name, quality=95)
            images.append(dict(id=idx + 1, file_name=name, width=img_size, height=img_size))
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return root


def _oriented_object(kind: str, radius: float):
    """Polygon to draw and half extents of its oriented box, in the object's frame."""
    if kind == 'plane':  # a cross: fuselage and wings
        a, b = radius, radius * 0.25
        pts = np.array([[-a, -b], [-b, -b], [-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a],
                        [-b, a], [-b, b], [-a, b]])
        return pts, (a, a)
    if kind == 'ship':  # elongated hexagon
        a, b = radius, radius * 0.3
        pts = np.array([[-a, 0], [-a * 0.6, -b], [a * 0.6, -b], [a, 0], [a * 0.6, b], [-a * 0.6, b]])
        return pts, (a, b)
    a, b = radius * 0.7, radius * 0.35  # small vehicle: 2:1 rectangle
    return np.array([[-a, -b], [a, -b], [a, b], [-a, b]]), (a, b)


def make_dota(root: str | Path, num_train: int = 32, num_val: int = 8, img_size: int = 256,
              seed: int = 0, shift: bool = False, num_test: int = 0) -> Path:
    """Write ``root/{trainval,val}/{images/*.png,annfiles/*.txt}`` in DOTA-v1.0 format (after splitting), and
    ``root/test/`` with ``num_test`` images (a held-out test split, see :func:`split_streams`).

    ``shift``: a target domain far from the pretraining source (see :data:`SHIFT_DOC`)."""
    root = Path(root)
    for split, count, rng in split_streams(seed, (('trainval', num_train), ('val', num_val)), ('test', num_test)):
        (root / split / 'images').mkdir(parents=True, exist_ok=True)
        (root / split / 'annfiles').mkdir(parents=True, exist_ok=True)
        for idx in range(count):
            img = Image.fromarray(_background(rng, img_size, img_size))
            draw = ImageDraw.Draw(img)
            if shift:
                _clutter(rng, draw, (img_size, img_size), int(rng.integers(6, 14)))
            lines = []  # split DOTA label files (mmrotate's img_split output) carry no header lines
            for centre, radius in _place(rng, int(rng.integers(2, 7)), (img_size, img_size),
                                         (img_size / 10, img_size / 5)):
                label = int(rng.integers(len(DOTA_CLASSES)))
                pts, (a, b) = _oriented_object(DOTA_CLASSES[label], radius)
                angle = rng.uniform(0, math.pi)
                draw.polygon([tuple(p) for p in _rotate(pts, angle, centre)],
                             fill=_object_colour(rng, label, shift))
                box = _rotate(np.array([[-a, -b], [a, -b], [a, b], [-a, b]]), angle, centre)
                lines.append(' '.join(f'{v:.1f}' for v in box.ravel()) + f' {DOTA_CLASSES[label]} 0')
            name = f'P{idx:04d}'
            img = Image.fromarray(_texture(rng, np.asarray(img))) if shift else img
            img.save(root / split / 'images' / f'{name}.png')
            (root / split / 'annfiles' / f'{name}.txt').write_text('\n'.join(lines) + '\n')
    return root


def make_ade20k(root: str | Path, num_train: int = 32, num_val: int = 8, img_size: int = 128,
                seed: int = 0, shift: bool = False, num_test: int = 0) -> Path:
    """Write ``root/images/{training,validation}/*.jpg`` and ``root/annotations/...*.png`` (ADE20K layout), and
    ``test`` folders with ``num_test`` images (a held-out test split, see :func:`split_streams`).
    ``shift``: a target domain far from the pretraining source (see :data:`SHIFT_DOC`).

    Scenes: sky above a horizon, floor below, building rectangles standing on the horizon, tree discs, and
    a wall patch; label values are 1-based indices into :data:`ADE_CLASSES`.
    """
    root = Path(root)
    for split, count, rng in split_streams(seed, (('training', num_train), ('validation', num_val)),
                                           ('test', num_test)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for idx in range(count):
            h = w = img_size
            horizon = int(rng.uniform(0.35, 0.65) * h)
            label = np.full((h, w), 4, np.uint8)  # floor
            label[:horizon] = 3  # sky
            img = Image.fromarray(_background(rng, h, w))
            colours = {1: (150, 150, 140), 2: (170, 90, 60), 3: (110, 170, 235), 4: (120, 100, 80), 5: (40, 140, 50)}
            lab = Image.fromarray(label)
            draw_i, draw_l = ImageDraw.Draw(img), ImageDraw.Draw(lab)
            def jitter(c):  # the class colour, jittered; with ``shift`` only for a share KEEP_CLASS_COLOUR
                if shift and rng.random() >= KEEP_CLASS_COLOUR:
                    return tuple(int(v) for v in rng.uniform(0, 255, 3))
                return tuple(int(v) for v in np.clip(np.array(c) + rng.normal(0, 20, 3), 0, 255))
            draw_i.rectangle([0, 0, w, horizon], fill=jitter(colours[3]))
            draw_i.rectangle([0, horizon, w, h], fill=jitter(colours[4]))
            shapes = [(2, 'rect')] * int(rng.integers(1, 4)) + [(5, 'disc')] * int(rng.integers(1, 4))
            shapes += [(1, 'rect')] * int(rng.integers(0, 2))
            for cls, kind in shapes:
                cx = rng.uniform(0, w)
                if kind == 'rect':
                    bw, bh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.15, 0.4) * h
                    box = [cx - bw / 2, horizon - bh, cx + bw / 2, horizon + (0 if cls == 2 else bh / 3)]
                    draw_i.rectangle(box, fill=jitter(colours[cls]))
                    draw_l.rectangle(box, fill=cls)
                else:
                    r = rng.uniform(0.05, 0.12) * w
                    cy = horizon + rng.uniform(-r, r)
                    box = [cx - r, cy - r, cx + r, cy + r]
                    draw_i.ellipse(box, fill=jitter(colours[cls]))
                    draw_l.ellipse(box, fill=cls)
            if shift:
                _clutter(rng, draw_i, (h, w), int(rng.integers(4, 10)))
                noisy = _texture(rng, np.asarray(img))
            else:
                noisy = np.clip(np.asarray(img, float) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
            prefix = {'training': 'ADE_train', 'validation': 'ADE_val'}.get(split, 'ADE_test')
            Image.fromarray(noisy).save(root / 'images' / split / f'{prefix}_{idx:08d}.jpg', quality=95)
            lab.save(root / 'annotations' / split / f'{prefix}_{idx:08d}.png')
    return root


#: The seed-sequence key of the test split's random stream (independent of the train / validation stream).
TEST_STREAM = 7


def split_streams(seed: int, shared: tuple, test: tuple[str, int]):
    """``(split, count, rng)`` per split: the train and validation splits draw in turn from one stream
    (``default_rng(seed)``, as before test splits existed, so they are unchanged), the test split from its own,
    independent stream (``default_rng([seed, TEST_STREAM])``): adding or resizing it changes no other image."""
    rng = np.random.default_rng(seed)
    for split, count in shared:
        yield split, count, rng
    if test[1] > 0:
        yield test[0], test[1], np.random.default_rng([seed, TEST_STREAM])


def ensure_dataset(maker: str, out: str | Path, **kwargs) -> Path:
    """``out`` holding the dataset ``make_<task>(out, **kwargs)`` writes (``maker`` names the function), generated
    unless a previous call with the same arguments completed it (``out/.complete`` records them; other arguments,
    e.g. an added test split, regenerate it)."""
    out = Path(out)
    marker = out / '.complete'
    if not marker.exists() or json.loads(marker.read_text()) != json.loads(json.dumps(kwargs)):
        globals()[maker](out, **kwargs)
        marker.write_text(json.dumps(kwargs))
    return out

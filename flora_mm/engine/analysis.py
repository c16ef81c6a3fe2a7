"""Paired intervals that cover both sources of variance of a test result: the training seed and the test images.

A run's test metric is recomputed on resampled test images from per-image sufficient statistics, kept in its run
file, so that a bootstrap resample costs a weighted sum, not a new evaluation:

* semantic segmentation (mIoU): per image and class, the intersection and union areas (:func:`segmentation_stats`);
  mIoU over a multiset of images is the mean over classes of summed intersections over summed unions, which is
  exactly mmseg's ``IoUMetric`` on those images (tested against it).

The paired bootstrap (:func:`paired_bootstrap`) resamples seeds (pairs of runs of the two methods with the same seed)
and, within each resample, the test images (the same images for both methods), and recomputes the mean paired
difference. Detection metrics (COCO bbox mAP, DOTA mAP) need per-image matching statistics; until they are
written here, their runs keep the per-image predictions and their intervals cover seeds only (say so).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ['miou', 'paired_bootstrap', 'segmentation_stats']


def _array(value) -> np.ndarray:
    data = value['data'] if isinstance(value, Mapping) else value
    return np.asarray(data.cpu().numpy() if hasattr(data, 'cpu') else data)


def segmentation_stats(predictions: Sequence[Mapping], num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``[images, classes, 2]`` intersection and union pixel counts of each image (the ``tools/test.py --out``
    records of an mmseg model: ``pred_sem_seg`` and ``gt_sem_seg``, labels already reduced as the metric sees them)."""
    out = np.zeros((len(predictions), num_classes, 2), dtype=np.int64)
    for i, sample in enumerate(predictions):
        pred = _array(sample['pred_sem_seg']).reshape(-1)
        label = _array(sample['gt_sem_seg']).reshape(-1)
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
        inter = np.bincount(label[pred == label], minlength=num_classes)[:num_classes]
        area_pred = np.bincount(pred, minlength=num_classes)[:num_classes]
        area_label = np.bincount(label, minlength=num_classes)[:num_classes]
        out[i, :, 0] = inter
        out[i, :, 1] = area_pred + area_label - inter
    return out


def miou(stats: np.ndarray, counts: np.ndarray | None = None) -> float:
    """mIoU in % of the images weighted by ``counts`` (how often each is drawn; default once each): classes that
    never occur (union 0) are left out, as mmseg's ``nanmean`` does."""
    total = stats.sum(0) if counts is None else np.tensordot(counts, stats, axes=1)
    inter, union = total[:, 0].astype(float), total[:, 1].astype(float)
    present = union > 0
    return float(100 * np.mean(inter[present] / union[present]))


def paired_bootstrap(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray],
                     metric: Callable[[np.ndarray, np.ndarray | None], float], resamples: int = 10000,
                     seed: int = 0, images: bool = True) -> dict:
    """Mean paired difference ``metric(a) - metric(b)`` over the seeds both have, with a 95% percentile interval
    and a two-sided p-value from resampling seeds and (``images``) test images.

    Args:
        a, b: Per seed, a run's per-image statistics (same images, same order, for every run).
        metric: ``metric(stats, counts)``: the metric of the images drawn ``counts`` times.
        resamples: Bootstrap resamples.
        seed: The bootstrap's own random seed.
        images: Also resample test images (else seeds only).
    """
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f'paired bootstrap needs at least 2 paired seeds, got {seeds}')
    n_images = {a[s].shape[0] for s in seeds} | {b[s].shape[0] for s in seeds}
    if len(n_images) != 1:
        raise ValueError(f'runs evaluated on different numbers of test images: {sorted(n_images)}')
    n = n_images.pop()
    observed = float(np.mean([metric(a[s], None) - metric(b[s], None) for s in seeds]))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for k in range(resamples):
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        counts = np.bincount(rng.integers(0, n, n), minlength=n) if images else None
        diffs[k] = np.mean([metric(a[s], counts) - metric(b[s], counts) for s in drawn])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return dict(mean=observed, lo=float(lo), hi=float(hi), p=float(p), seeds=len(seeds), images=n,
                covers='seeds and test images' if images else 'seeds')

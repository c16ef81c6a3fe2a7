"""Paired intervals that cover both sources of variance of a test result: the training seed and the test images.

A run's test metric is recomputed on resampled test images from per-image sufficient statistics, kept in its run
file, so that a bootstrap resample costs a weighted sum, not a new evaluation:

* semantic segmentation (mIoU): per image and class, the intersection and union areas (:func:`segmentation_stats`);
  mIoU over a multiset of images is the mean over classes of summed intersections over summed unions, which is
  exactly mmseg's ``IoUMetric`` on those images (tested against it);
* COCO bbox mAP: per detection (its image, class, score, and whether it is a true / false positive at each IoU
  threshold, from pycocotools' own matching) and per image and class the number of counted ground truths
  (:func:`coco_stats`); :func:`bbox_map` re-runs pycocotools' accumulation on them with image weights (equal to
  pycocotools' AP@[.5:.95] on the images drawn once; on duplicated images it evaluates the precision envelope at the
  end of each block of tied duplicates only, a difference bounded by the tests at 0.005).

The paired bootstrap (:func:`paired_bootstrap`) resamples seeds (pairs of runs of the two methods with the same seed)
and, within each resample, the test images (the same images for both methods), and recomputes the mean paired
difference.

* DOTA mAP (mmrotate's ``eval_rbbox_map``: IoU 0.5, VOC07 11-point AP): per detection (image, class, score, true /
  false positive from mmrotate's own ``tpfp_default``) and per image and class the number of ground truths
  (:func:`dota_stats`); :func:`rbox_map` accumulates them with image weights (equal to ``eval_rbbox_map`` on the
  images drawn once).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ['bbox_map', 'coco_stats', 'dota_stats', 'holm', 'miou', 'paired_bootstrap', 'rbox_map', 'segmentation_stats',
           't_interval']


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


#: pycocotools' recall thresholds and IoU thresholds (bbox AP@[.5:.95]), 100 detections per image
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
IOU_THRESHOLDS = 10
MAX_DETS = 100


def coco_stats(ann_file: str, detections: Sequence[Mapping], classes: Sequence[str]) -> dict:
    """Per-detection matching and per-image ground-truth counts of bbox detections on a COCO annotation file.

    Args:
        ann_file: The test split's COCO annotations.
        detections: mmdet predictions (``tools/test.py --out``): ``img_id`` and ``pred_instances`` with ``bboxes``
            (x1, y1, x2, y2), ``scores``, ``labels`` (indices into ``classes``).
        classes: The dataset's class names, in label order.

    Returns:
        ``dets``: ``[D, 5]`` (image index, class index, score, true-positive bits, false-positive bits over the 10
        IoU thresholds; an ignored detection has neither); ``gts``: ``[images, classes]`` counted ground truths.
    """
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        cat_ids = gt.getCatIds(catNms=list(classes))
        names = {c['id']: c['name'] for c in gt.loadCats(cat_ids)}
        cat_ids = sorted(cat_ids, key=lambda c: list(classes).index(names[c]))
        results = []
        for sample in detections:
            inst = sample['pred_instances']
            for box, score, label in zip(_array(inst['bboxes']).tolist(), _array(inst['scores']).tolist(),
                                         _array(inst['labels']).tolist()):
                results.append(dict(image_id=int(sample['img_id']), category_id=cat_ids[int(label)], score=score,
                                    bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]]))
        img_ids = sorted(gt.getImgIds())
        evaluation = COCOeval(gt, gt.loadRes(results) if results else COCO(), 'bbox')
        evaluation.params.imgIds, evaluation.params.catIds = img_ids, cat_ids
        evaluation.evaluate()
    rows, gts = [], np.zeros((len(img_ids), len(cat_ids)), dtype=np.int64)
    bits = 1 << np.arange(IOU_THRESHOLDS)
    n_img, n_area = len(img_ids), len(evaluation.params.areaRng)
    for k in range(len(cat_ids)):
        for i in range(n_img):
            e = evaluation.evalImgs[k * n_area * n_img + i]  # area range 'all'
            if e is None:
                continue
            gts[i, k] = int(np.count_nonzero(np.asarray(e['gtIgnore']) == 0))
            matched = np.asarray(e['dtMatches'])[:, :MAX_DETS] > 0
            ignored = np.asarray(e['dtIgnore'])[:, :MAX_DETS].astype(bool)
            tp, fp = (matched & ~ignored), (~matched & ~ignored)
            for j, score in enumerate(e['dtScores'][:MAX_DETS]):
                rows.append((i, k, score, int(bits @ tp[:, j]), int(bits @ fp[:, j])))
    return dict(dets=np.asarray(rows, dtype=float).reshape(-1, 5), gts=gts)


def _by_class(stats: Mapping[str, np.ndarray], counts: np.ndarray | None):
    """Per class that has ground truth among the drawn images: (ground truths counted with the image weights, its
    detections of drawn images sorted by score -- stable, in image order for ties --, their image weights)."""
    dets, gts = np.asarray(stats['dets']), np.asarray(stats['gts'])
    weights_img = np.ones(gts.shape[0]) if counts is None else np.asarray(counts, dtype=float)
    for k in range(gts.shape[1]):
        positives = float(weights_img @ gts[:, k])
        if positives == 0:
            continue
        mine = dets[dets[:, 1] == k]
        w = weights_img[mine[:, 0].astype(int)]
        mine, w = mine[w > 0], w[w > 0]
        order = np.argsort(-mine[:, 2], kind='mergesort')
        yield positives, mine[order], w[order]


def bbox_map(stats: Mapping[str, np.ndarray], counts: np.ndarray | None = None) -> float:
    """COCO bbox AP@[.5:.95] (a fraction, as mmdet reports it) of the images weighted by ``counts``: pycocotools'
    accumulation (stable sort by score, cumulative true / false positives, monotone precision envelope, 101 recall
    thresholds; classes without counted ground truth left out) with each detection weighted by its image's count."""
    aps = []
    for npig, mine, w in _by_class(stats, counts):
        tp_bits, fp_bits = mine[:, 3].astype(np.int64), mine[:, 4].astype(np.int64)
        for t in range(IOU_THRESHOLDS):
            tp = np.cumsum(w * ((tp_bits >> t) & 1))
            fp = np.cumsum(w * ((fp_bits >> t) & 1))
            q = np.zeros(len(RECALL_THRESHOLDS))
            if len(tp):
                rc = tp / npig
                pr = tp / (tp + fp + np.spacing(1))
                pr = np.maximum.accumulate(pr[::-1])[::-1]
                inds = np.searchsorted(rc, RECALL_THRESHOLDS, side='left')
                valid = inds < len(pr)
                q[valid] = pr[inds[valid]]
            aps.append(q.mean())
    return float(np.mean(aps)) if aps else float('nan')


def dota_stats(predictions: Sequence[Mapping], num_classes: int, iou_thr: float = 0.5, box_type: str = 'rbox') -> dict:
    """Per-detection matching and per-image ground-truth counts of an mmrotate test run (``tools/test.py --out``:
    ``pred_instances``, ``gt_instances``, ``ignored_instances`` per image), matched by mmrotate's ``tpfp_default``.

    Returns:
        ``dets``: ``[D, 5]`` (image index, class index, score, true positive, false positive); ``gts``:
        ``[images, classes]`` ground truths (ignored ones excluded, as ``eval_rbbox_map`` counts them).
    """
    from mmrotate.evaluation.functional.mean_ap import tpfp_default
    rows, gts = [], np.zeros((len(predictions), num_classes), dtype=np.int64)
    for i, sample in enumerate(predictions):
        pred, gt, ignored = sample['pred_instances'], sample['gt_instances'], sample['ignored_instances']
        boxes, scores, labels = _array(pred['bboxes']), _array(pred['scores']), _array(pred['labels'])
        gt_boxes, gt_labels = _array(gt['bboxes']), _array(gt['labels'])
        ig_boxes, ig_labels = _array(ignored['bboxes']), _array(ignored['labels'])
        width = gt_boxes.shape[-1] if gt_boxes.size else boxes.shape[-1] if boxes.size else 5
        for k in range(num_classes):
            mine = labels == k
            det = np.hstack([boxes[mine].reshape(-1, width), scores[mine].reshape(-1, 1)])
            gt_k = gt_boxes[gt_labels == k].reshape(-1, width)
            gts[i, k] = gt_k.shape[0]
            if not len(det):
                continue
            tp, fp = tpfp_default(det, gt_k, ig_boxes[ig_labels == k].reshape(-1, width), iou_thr, box_type)
            rows += [(i, k, float(sc), float(t), float(f)) for sc, t, f in zip(det[:, -1], tp[0], fp[0])]
    return dict(dets=np.asarray(rows, dtype=float).reshape(-1, 5), gts=gts)


def rbox_map(stats: Mapping[str, np.ndarray], counts: np.ndarray | None = None, use_07_metric: bool = True) -> float:
    """DOTA mAP (a fraction, as mmrotate reports it) of the images weighted by ``counts``: ``eval_rbbox_map``'s
    accumulation (detections by score, cumulative true / false positives, VOC07 11-point or area AP, the mean over
    classes that have ground truth) with each detection weighted by its image's count."""
    from mmdet.evaluation.functional import average_precision
    eps = np.finfo(np.float32).eps
    aps = []
    for npos, mine, w in _by_class(stats, counts):
        tp, fp = np.cumsum(w * mine[:, 3]), np.cumsum(w * mine[:, 4])
        recalls = tp / max(npos, eps)
        precisions = tp / np.maximum(tp + fp, eps)
        aps.append(float(average_precision(recalls, precisions, '11points' if use_07_metric else 'area')))
    return float(np.mean(aps)) if aps else 0.0


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


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """One-sample Student-t test of mean 0 on paired differences: the two-sided ``level`` confidence interval of the
    mean and the two-sided p-value (the interval excludes 0 exactly when p < 1 - level)."""
    from scipy import stats
    n = len(values)
    if n < 2:
        return math.nan, math.nan, math.nan
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    p = (1.0 if mean == 0 else 0.0) if sd == 0 else float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return mean - half, mean + half, p


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes max over j <= i of (m - j + 1) p_(j),
    capped at 1; rejecting where the adjusted value is below alpha keeps the family-wise error rate at alpha."""
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(sorted(range(len(pvalues)), key=pvalues.__getitem__)):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted

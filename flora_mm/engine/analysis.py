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
difference. The image resamples are a fixed table (:func:`image_draws`) shared by every run, so each run's metric
on them is computed once (:func:`metric_on_draws`, vectorised) however many comparisons the run enters
(:func:`paired_resampled` pairs the precomputed values).

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

__all__ = ['bbox_map', 'coco_stats', 'dota_stats', 'holm', 'image_draws', 'metric_on_draws', 'miou', 'n_images',
           'paired_bootstrap', 'paired_resampled', 'rbox_map', 'segmentation_stats', 't_interval']


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


def _classes_sorted(stats: Mapping[str, np.ndarray]):
    """Per class: the per-image ground truths and the class's detections sorted by score (stable; the detections of
    the images a row draws keep this order, as the per-row sort gives them), computed once for every row."""
    dets, gts = np.asarray(stats['dets'], dtype=float).reshape(-1, 5), np.asarray(stats['gts'])
    for k in range(gts.shape[1]):
        mine = dets[dets[:, 1] == k]
        yield gts[:, k], mine[np.argsort(-mine[:, 2], kind='mergesort')]


def _by_class(stats: Mapping[str, np.ndarray], counts: np.ndarray | None):
    """Per class that has ground truth among the drawn images: (ground truths counted with the image weights, its
    detections of drawn images sorted by score -- stable, in image order for ties --, their image weights)."""
    weights_img = np.ones(np.asarray(stats['gts']).shape[0]) if counts is None else np.asarray(counts, dtype=float)
    for gts_k, mine in _classes_sorted(stats):
        positives = float(weights_img @ gts_k)
        if positives == 0:
            continue
        w = weights_img[mine[:, 0].astype(int)]
        yield positives, mine[w > 0], w[w > 0]


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


def _miou_on_draws(stats: np.ndarray, draws: np.ndarray) -> np.ndarray:
    total = np.tensordot(draws, np.asarray(stats), axes=1)  # [rows, classes, 2], exact integer sums
    inter, union = total[..., 0].astype(float), total[..., 1].astype(float)
    present = union > 0
    ratio = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    with np.errstate(invalid='ignore'):  # a row without any class present: nan, as the per-row mean of nothing
        return 100 * ratio.sum(1) / present.sum(1)


def _per_row_mean(aps: list[np.ndarray], counted: list[np.ndarray], rows: int, empty: float) -> np.ndarray:
    """Row-wise mean of the APs of the classes a row counts (``np.mean`` of the per-row list, element order kept;
    ``empty`` for a row that counts none)."""
    if not aps:
        return np.full(rows, empty)
    aps, counted = np.stack(aps, 1), np.stack(counted, 1)
    if counted.all():
        return aps.mean(1)
    return np.array([np.mean(a[c]) if c.any() else empty for a, c in zip(aps, counted)])


def _bbox_map_on_draws(stats: Mapping[str, np.ndarray], draws: np.ndarray) -> np.ndarray:
    """:func:`bbox_map` of every row, the classes sorted and their true / false positive bits unpacked once: a loop
    over the rows (each row's accumulation runs over the detections of the images it draws, as the per-row call
    does), all ten IoU thresholds of a class in one ``[detections, 10]`` cumulative sum."""
    bits = 1 << np.arange(IOU_THRESHOLDS)
    classes = [(gts_k, mine[:, 0].astype(int), (mine[:, 3:4].astype(np.int64) & bits) > 0,
                (mine[:, 4:5].astype(np.int64) & bits) > 0) for gts_k, mine in _classes_sorted(stats)]
    out = np.empty(len(draws))
    for r, row in enumerate(np.asarray(draws, dtype=float)):
        aps = []
        for gts_k, image, tp_bits, fp_bits in classes:
            positives = float(row @ gts_k)
            if positives == 0:
                continue
            w = row[image]
            keep = w > 0
            w = w[keep][:, None]
            q = np.zeros((IOU_THRESHOLDS, len(RECALL_THRESHOLDS)))
            if len(w):
                tp, fp = np.cumsum(w * tp_bits[keep], axis=0), np.cumsum(w * fp_bits[keep], axis=0)
                rc = tp / positives
                pr = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1], axis=0)[::-1]
                for t in range(IOU_THRESHOLDS):
                    inds = np.searchsorted(rc[:, t], RECALL_THRESHOLDS, side='left')
                    valid = inds < len(w)
                    q[t, valid] = pr[inds[valid], t]
            aps.extend(q.mean(1))
        out[r] = np.mean(aps) if aps else np.nan
    return out


def _rbox_map_on_draws(stats: Mapping[str, np.ndarray], draws: np.ndarray, chunk: int = 128) -> np.ndarray:
    """:func:`rbox_map` of ``chunk`` rows at a time. A detection of an image a row does not draw keeps weight 0
    there: it repeats the previous cumulative counts, which changes no best precision at recall >= a threshold
    (the per-row call drops it instead)."""
    eps = np.finfo(np.float32).eps
    thresholds = np.arange(0, 1 + 1e-3, 0.1)  # mmdet's VOC07 11 points
    classes = list(_classes_sorted(stats))
    out = []
    for start in range(0, len(draws), chunk):
        rows = draws[start:start + chunk].astype(float)
        aps, counted = [], []
        for gts_k, mine in classes:
            positives = rows @ gts_k
            w = rows[:, mine[:, 0].astype(int)]
            tp, fp = np.cumsum(w * mine[:, 3], axis=1), np.cumsum(w * mine[:, 4], axis=1)
            recalls = tp / np.maximum(positives, eps)[:, None]
            envelope = np.maximum.accumulate((tp / np.maximum(tp + fp, eps))[:, ::-1], axis=1)[:, ::-1]
            ap = np.zeros(len(rows), dtype=np.float32)  # mmdet's average_precision accumulates in float32
            for thr in thresholds:  # the best precision at recall >= thr: the envelope at the first such detection
                first = (recalls < thr).sum(1)
                ap += np.where(first < w.shape[1], envelope[np.arange(len(rows)), np.minimum(first, w.shape[1] - 1)]
                               if w.shape[1] else 0.0, 0.0)
            ap /= 11
            aps.append(ap.astype(float))
            counted.append(positives > 0)
        out.append(_per_row_mean(aps, counted, len(rows), 0.0))  # rbox_map: 0 without ground truth
    return np.concatenate(out)


_ON_DRAWS = {miou: _miou_on_draws, bbox_map: _bbox_map_on_draws, rbox_map: _rbox_map_on_draws}


def image_draws(n_images: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``[resamples, n_images]`` counts: row k is the k-th bootstrap resample of the test images (``n_images``
    draws with replacement), the same rows for every run and every comparison with the same arguments."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_images, (resamples, n_images)) + n_images * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n_images).reshape(resamples, n_images)


def metric_on_draws(metric: Callable[[np.ndarray, np.ndarray | None], float], stats,
                    draws: np.ndarray) -> np.ndarray:
    """``metric(stats, row)`` for every row of ``draws`` (:func:`image_draws`): vectorised over the rows for
    :func:`miou`, :func:`bbox_map` and :func:`rbox_map` (the same accumulation, equal to the per-row call), a loop
    over the rows for any other metric."""
    batched = _ON_DRAWS.get(metric)
    if batched is not None:
        return batched(stats, np.asarray(draws))
    return np.array([metric(stats, row) for row in draws], dtype=float)


def paired_resampled(a: Mapping[int, tuple[float, np.ndarray]], b: Mapping[int, tuple[float, np.ndarray]],
                     seed: int = 0, images: int | None = None) -> dict:
    """The paired bootstrap of :func:`paired_bootstrap` from each run's metric precomputed on the image draws.

    Args:
        a, b: Per seed, (the run's metric on the test set, its metric on each row of the image draws -- or that
            metric repeated, to resample seeds only). Row k of every run must be the same image resample.
        seed: The seed resampling's random seed (paired with image resample k in bootstrap resample k).
        images: The number of test images the draws resample (None: seeds only).
    """
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f'paired bootstrap needs at least 2 paired seeds, got {seeds}')
    observed = float(np.mean([a[s][0] - b[s][0] for s in seeds]))
    per_seed = np.stack([np.asarray(a[s][1], dtype=float) - np.asarray(b[s][1], dtype=float) for s in seeds])
    resamples = per_seed.shape[1]
    drawn = np.random.default_rng((seed, 1)).integers(0, len(seeds), (resamples, len(seeds)))
    diffs = per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return dict(mean=observed, lo=float(lo), hi=float(hi), p=float(p), seeds=len(seeds), images=images,
                covers='seeds and test images' if images else 'seeds')


def paired_bootstrap(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray],
                     metric: Callable[[np.ndarray, np.ndarray | None], float], resamples: int = 10000,
                     seed: int = 0, images: bool = True) -> dict:
    """Mean paired difference ``metric(a) - metric(b)`` over the seeds both have, with a 95% percentile interval
    and a two-sided p-value from resampling seeds and (``images``) test images: bootstrap resample k draws the seeds
    with replacement and, independently, image resample k of :func:`image_draws` (the same images for both methods
    and every seed), and takes the mean paired difference over the drawn seeds.

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
    sizes = {n_images(a[s]) for s in seeds} | {n_images(b[s]) for s in seeds}
    if len(sizes) != 1:
        raise ValueError(f'runs evaluated on different numbers of test images: {sorted(sizes)}')
    n = sizes.pop()
    draws = image_draws(n, resamples, seed) if images else None

    def resampled(stats) -> tuple[float, np.ndarray]:
        value = metric(stats, None)
        return value, metric_on_draws(metric, stats, draws) if images else np.full(resamples, value)
    return paired_resampled({s: resampled(a[s]) for s in seeds}, {s: resampled(b[s]) for s in seeds}, seed,
                            n if images else None)


def n_images(stats) -> int:
    """The number of test images of a run's per-image statistics (an array by image, or a dict with ``gts``)."""
    return (stats['gts'] if isinstance(stats, Mapping) else stats).shape[0]


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

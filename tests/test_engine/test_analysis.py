"""Per-image statistics and the paired bootstrap (flora_mm.engine.analysis), against mmseg's IoUMetric and against
explicit recomputation on duplicated images."""
import numpy as np
import pytest
import torch

from flora_mm.engine import analysis
from flora_mm.engine.analysis import miou, paired_bootstrap, segmentation_stats

CLASSES = 5


def _samples(seed, n=6, size=(12, 10)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.randint(0, CLASSES, size, generator=g)
        label[torch.rand(size, generator=g) < 0.1] = 255  # ignored pixels
        pred = torch.where(torch.rand(size, generator=g) < 0.6, label.clamp(max=CLASSES - 1),
                           torch.randint(0, CLASSES, size, generator=g))
        out.append(dict(pred_sem_seg=dict(data=pred[None]), gt_sem_seg=dict(data=label[None])))
    return out


def test_miou_of_the_statistics_is_mmsegs_iou_metric():
    from mmseg.evaluation import IoUMetric
    samples = _samples(0)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=[str(c) for c in range(CLASSES)])
    metric.process([], [dict(pred_sem_seg=dict(data=s['pred_sem_seg']['data']),
                             gt_sem_seg=dict(data=s['gt_sem_seg']['data'])) for s in samples])
    expected = metric.compute_metrics(metric.results)['mIoU']
    assert miou(segmentation_stats(samples, CLASSES)) == pytest.approx(expected, abs=0.01)  # mmseg rounds to 0.01


def test_counts_weigh_images_like_duplicating_them():
    stats = segmentation_stats(_samples(1), CLASSES)
    counts = np.array([0, 2, 1, 0, 3, 0])
    duplicated = np.concatenate([stats[i:i + 1].repeat(c, 0) for i, c in enumerate(counts) if c])
    assert miou(stats, counts) == pytest.approx(miou(duplicated))


def test_identical_methods_give_a_zero_interval():
    runs = {s: segmentation_stats(_samples(s), CLASSES) for s in range(4)}
    result = paired_bootstrap(runs, runs, miou, resamples=200)
    assert result['mean'] == 0 and result['lo'] == result['hi'] == 0 and result['p'] == 1.0


def test_a_consistently_better_method_is_resolved_and_images_widen_the_interval():
    a = {s: segmentation_stats(_samples(s), CLASSES) for s in range(5)}
    b = {}
    for s, stats in a.items():
        worse = stats.copy()
        worse[:, :, 0] = (worse[:, :, 0] * (0.85 + 0.02 * s)).astype(np.int64)  # fewer intersections, seed-dependent
        b[s] = worse
    both = paired_bootstrap(a, b, miou, resamples=2000)
    seeds_only = paired_bootstrap(a, b, miou, resamples=2000, images=False)
    expected = np.mean([miou(a[s]) - miou(b[s]) for s in a])
    assert both['mean'] == pytest.approx(expected) and both['lo'] > 0 and both['p'] < 0.01
    assert both['covers'] == 'seeds and test images' and seeds_only['covers'] == 'seeds'
    assert both['hi'] - both['lo'] > seeds_only['hi'] - seeds_only['lo']


def test_bootstrap_refuses_unpaired_or_mismatched_runs():
    stats = segmentation_stats(_samples(0), CLASSES)
    with pytest.raises(ValueError, match='at least 2 paired seeds'):
        paired_bootstrap({0: stats, 1: stats}, {1: stats, 2: stats}, miou)
    with pytest.raises(ValueError, match='different numbers of test images'):
        paired_bootstrap({0: stats, 1: stats}, {0: stats[:3], 1: stats}, miou)


def _coco_case(tmp_path, counts=None, seed=0, n=8):
    """A COCO annotation file and mmdet-style detections; ``counts`` duplicates image i counts[i] times (as new
    images with the same annotations and detections)."""
    import json
    rng = np.random.default_rng(seed)
    classes = ('a', 'b', 'c')
    base = []
    for i in range(n):
        gts = [(rng.uniform(0, 60, 2), rng.uniform(8, 30, 2), int(rng.integers(3))) for _ in range(rng.integers(0, 5))]
        dets = []
        for xy, wh, c in gts:
            if rng.random() < 0.8:  # a detection near the object, jittered
                j = rng.normal(0, 3, 4)
                dets.append(([xy[0] + j[0], xy[1] + j[1], xy[0] + wh[0] + j[2], xy[1] + wh[1] + j[3]],
                             rng.uniform(0.3, 1), c if rng.random() < 0.9 else (c + 1) % 3))
        for _ in range(rng.integers(0, 4)):  # background detections
            xy = rng.uniform(0, 60, 2)
            dets.append(([xy[0], xy[1], xy[0] + 10, xy[1] + 12], rng.uniform(0, 0.8), int(rng.integers(3))))
        base.append((gts, dets))
    counts = np.ones(n, dtype=int) if counts is None else np.asarray(counts)
    images, anns, samples = [], [], []
    for i, c in enumerate(counts):
        for _ in range(c):
            img_id = len(images) + 1
            images.append(dict(id=img_id, width=100, height=100, file_name=f'{img_id}.jpg'))
            gts, dets = base[i]
            for xy, wh, cls in gts:
                anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=cls + 1, iscrowd=0,
                                 bbox=[*xy, *wh], area=float(wh[0] * wh[1])))
            samples.append(dict(img_id=img_id, pred_instances=dict(
                bboxes=torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4),
                scores=torch.tensor([d[1] for d in dets]), labels=torch.tensor([d[2] for d in dets]))))
    path = tmp_path / f'ann_{seed}_{"_".join(map(str, counts))}.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=[dict(id=k + 1, name=c) for k, c in enumerate(classes)])))
    return str(path), samples, classes


def _pycocotools_map(ann_file, samples):
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        res = [dict(image_id=s['img_id'], category_id=int(l) + 1, score=float(sc),
                    bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]])
               for s in samples for b, sc, l in zip(s['pred_instances']['bboxes'].tolist(),
                                                    s['pred_instances']['scores'], s['pred_instances']['labels'])]
        ev = COCOeval(gt, gt.loadRes(res), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_bbox_map_of_the_statistics_is_pycocotools(tmp_path, seed):
    from flora_mm.engine.analysis import bbox_map, coco_stats
    ann, samples, classes = _coco_case(tmp_path, seed=seed)
    assert bbox_map(coco_stats(ann, samples, classes)) == pytest.approx(_pycocotools_map(ann, samples), abs=1e-9)


def test_bbox_map_counts_are_close_to_duplicating_images(tmp_path):
    from flora_mm.engine.analysis import bbox_map, coco_stats
    counts = [2, 0, 1, 3, 0, 1, 1, 0]
    ann, samples, classes = _coco_case(tmp_path)
    weighted = bbox_map(coco_stats(ann, samples, classes), np.asarray(counts))
    ann2, samples2, _ = _coco_case(tmp_path, counts=counts)
    assert weighted == pytest.approx(_pycocotools_map(ann2, samples2), abs=0.005)


def _dota_case(seed=0, n=6, classes=3):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        gts = [(*rng.uniform(20, 100, 2), *rng.uniform(8, 30, 2), rng.uniform(-1.5, 1.5), int(rng.integers(classes)))
               for _ in range(rng.integers(0, 5))]
        dets = []
        for *box, c in gts:
            if rng.random() < 0.8:
                dets.append((*(np.asarray(box) + rng.normal(0, [2, 2, 2, 2, 0.1])), rng.uniform(0.3, 1),
                             c if rng.random() < 0.9 else (c + 1) % classes))
        for _ in range(rng.integers(0, 3)):
            dets.append((*rng.uniform(20, 100, 2), 12, 10, 0.3, rng.uniform(0, 0.8), int(rng.integers(classes))))
        t = lambda rows, cols: torch.tensor([r[:cols] for r in rows], dtype=torch.float32).reshape(-1, cols)
        samples.append(dict(
            pred_instances=dict(bboxes=t(dets, 5), scores=torch.tensor([d[5] for d in dets]),
                                labels=torch.tensor([d[6] for d in dets], dtype=torch.long)),
            gt_instances=dict(bboxes=t(gts, 5), labels=torch.tensor([g[5] for g in gts], dtype=torch.long)),
            ignored_instances=dict(bboxes=torch.zeros(0, 5), labels=torch.zeros(0, dtype=torch.long))))
    return samples


def _mmrotate_map(samples, classes=3):
    from mmrotate.evaluation.functional import eval_rbbox_map
    dets, anns = [], []
    for s in samples:
        p, g = s['pred_instances'], s['gt_instances']
        dets.append([np.hstack([p['bboxes'][p['labels'] == k].numpy(), p['scores'][p['labels'] == k].numpy()[:, None]])
                     for k in range(classes)])
        anns.append(dict(bboxes=g['bboxes'].numpy(), labels=g['labels'].numpy(), bboxes_ignore=np.zeros((0, 5)),
                         labels_ignore=np.zeros(0)))
    return eval_rbbox_map(dets, anns, iou_thr=0.5, use_07_metric=True, box_type='rbox', nproc=1)[0]


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1])
def test_rbox_map_of_the_statistics_is_mmrotates_eval_rbbox_map(seed):
    from flora_mm.engine.analysis import dota_stats, rbox_map
    samples = _dota_case(seed)
    stats = dota_stats(samples, 3)
    assert rbox_map(stats) == pytest.approx(_mmrotate_map(samples), abs=1e-6)  # mmrotate sums in float32
    counts = np.array([2, 0, 1, 3, 1, 0])  # weights = duplicated images (no tied duplicates in 11-point AP)
    duplicated = [s for s, c in zip(samples, counts) for _ in range(c)]
    assert rbox_map(stats, counts) == pytest.approx(_mmrotate_map(duplicated), abs=0.01)


def _kind_case(kind, tmp_path):
    """(per-image statistics, metric) of one task kind, from the generated cases above."""
    from flora_mm.engine.analysis import bbox_map, coco_stats, dota_stats, rbox_map
    if kind == 'segmentation':
        return segmentation_stats(_samples(3, n=10), CLASSES), miou
    if kind == 'coco':
        ann, samples, classes = _coco_case(tmp_path, seed=4, n=12)
        return coco_stats(ann, samples, classes), bbox_map
    return dota_stats(_dota_case(5, n=10), 3), rbox_map


@pytest.mark.parametrize('kind', ['segmentation', 'coco', 'dota'])
def test_metric_on_draws_is_the_metric_of_each_row(kind, tmp_path):
    """The vectorised evaluation on many image resamples equals the per-row metric (the oracle, itself checked
    against pycocotools / mmrotate / mmseg above), across a chunk boundary, on rows that draw one image only (classes
    without ground truth there are not counted) and on a row that draws nothing."""
    stats, metric = _kind_case(kind, tmp_path)
    n = (stats['gts'] if kind != 'segmentation' else stats).shape[0]
    draws = np.concatenate([analysis.image_draws(n, 150, seed=7), np.eye(n, dtype=np.int64), np.zeros((1, n), int)])
    expected = np.array([metric(stats, row) for row in draws])
    np.testing.assert_allclose(analysis.metric_on_draws(metric, stats, draws), expected, rtol=0, atol=1e-12,
                               equal_nan=True)
    assert len(set(np.round(expected[:150], 9))) > 20  # the rows do differ


def test_image_draws_are_bootstrap_resamples_shared_by_every_run():
    draws = analysis.image_draws(40, 500, seed=3)
    assert draws.shape == (500, 40) and (draws.sum(1) == 40).all() and (draws >= 0).all()
    assert (draws == analysis.image_draws(40, 500, seed=3)).all() and not (draws == analysis.image_draws(40, 500)).all()
    assert abs((draws == 0).mean() - (1 - 1 / 40) ** 40) < 0.02  # an image is left out with probability ~1/e


def test_paired_bootstrap_of_detection_statistics(tmp_path):
    """COCO statistics (a dict per run, not an array): b drops the best-scored true positive of every image of
    a, so a - b > 0 on every seed; the mean is the mean of the per-seed bbox_map differences."""
    from flora_mm.engine.analysis import bbox_map
    stats, _ = _kind_case('coco', tmp_path)
    a, b = {}, {}
    for seed in range(3):
        keep = np.random.default_rng(seed).random(len(stats['dets'])) < 0.9
        a[seed] = dict(dets=stats['dets'][keep], gts=stats['gts'])
        worse = a[seed]['dets'].copy()
        worse[worse[:, 3] > 0, 4], worse[worse[:, 3] > 0, 3] = worse[worse[:, 3] > 0, 3], 0  # true -> false positive
        b[seed] = dict(dets=worse, gts=stats['gts'])
    result = paired_bootstrap(a, b, bbox_map, resamples=300)
    assert result['mean'] == pytest.approx(np.mean([bbox_map(a[s]) - bbox_map(b[s]) for s in a]))
    assert result['lo'] > 0 and result['images'] == 12 and result['covers'] == 'seeds and test images'


@pytest.mark.parametrize('pvalues, adjusted', [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # m = 4: 4 x 0.005, 3 x 0.01, max(2 x 0.03, 1 x 0.04)
    ([0.5, 0.2], [0.5, 0.4]),  # 2 x 0.2, then max(0.4, 1 x 0.5)
    ([0.3, 0.6, 0.9], [0.9, 1.0, 1.0]),  # 3 x 0.3, then 2 x 0.6 capped at 1, and never below an earlier step
    ([0.02], [0.02]),
])
def test_holm_adjustment_by_hand(pvalues, adjusted):
    assert analysis.holm(pvalues) == pytest.approx(adjusted)

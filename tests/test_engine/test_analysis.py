"""Per-image statistics and the paired bootstrap (flora_mm.engine.analysis), against mmseg's IoUMetric and against
explicit recomputation on duplicated images."""
import numpy as np
import pytest
import torch

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

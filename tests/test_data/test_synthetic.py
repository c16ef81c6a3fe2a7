"""The synthetic datasets: deterministic, read by the stock OpenMMLab dataset classes, and ``shift=True`` gives
a visibly different (textured, cluttered) domain with the same annotation formats."""
import numpy as np
import pytest
from PIL import Image

import flora_mm.mm  # noqa: F401  (registers the mm scopes we read with)
from flora_mm.data import ADE_CLASSES, COCO_CLASSES, DOTA_CLASSES, make_ade20k, make_coco, make_dota


def _coco(root):
    from mmdet.datasets import CocoDataset
    ds = CocoDataset(data_root=str(root), ann_file='annotations/instances_train2017.json',
                     data_prefix=dict(img='train2017/'), metainfo=dict(classes=COCO_CLASSES), pipeline=[])
    return ds, sorted(root.glob('train2017/*.jpg'))


def _dota(root):
    from mmrotate.datasets import DOTADataset
    ds = DOTADataset(data_root=str(root), ann_file='trainval/annfiles/', data_prefix=dict(img_path='trainval/images/'),
                     metainfo=dict(classes=DOTA_CLASSES), pipeline=[])
    return ds, sorted(root.glob('trainval/images/*.png'))


def _ade(root):
    from mmseg.datasets import ADE20KDataset
    ds = ADE20KDataset(data_root=str(root), data_prefix=dict(img_path='images/training',
                                                             seg_map_path='annotations/training'),
                       metainfo=dict(classes=ADE_CLASSES), pipeline=[])
    return ds, sorted(root.glob('images/training/*.jpg'))


CASES = [(make_coco, _coco), (make_dota, _dota), (make_ade20k, _ade)]


def _roughness(path) -> float:
    """Mean absolute difference between horizontally adjacent pixels (texture and clutter raise it)."""
    img = np.asarray(Image.open(path).convert('L'), float)
    return float(np.abs(np.diff(img, axis=1)).mean())


@pytest.mark.parametrize('make, read', CASES, ids=['coco', 'dota', 'ade20k'])
def test_source_and_shifted_target_are_read_by_the_stock_datasets(make, read, tmp_path):
    roughness = {}
    for shift in (False, True):
        root = make(tmp_path / f'shift{shift}', num_train=4, num_val=2, img_size=96, seed=0, shift=shift)
        again = make(tmp_path / f'again{shift}', num_train=4, num_val=2, img_size=96, seed=0, shift=shift)
        dataset, images = read(root)
        assert len(dataset) == 4 and len(images) == 4
        if 'instances' in dataset[0]:
            assert all(len(dataset[i]['instances']) > 0 for i in range(4))
        _, images2 = read(again)
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(images, images2))  # deterministic
        roughness[shift] = np.mean([_roughness(p) for p in images])
    assert roughness[True] > 1.5 * roughness[False]


# (maker, the images of the train, validation and test splits, relative to the root)
SPLIT_GLOBS = [
    (make_coco, ('train2017/*.jpg', 'val2017/*.jpg', 'test2017/*.jpg')),
    (make_dota, ('trainval/images/*.png', 'val/images/*.png', 'test/images/*.png')),
    (make_ade20k, ('images/training/*.jpg', 'images/validation/*.jpg', 'images/test/*.jpg')),
]


@pytest.mark.parametrize('make,globs', SPLIT_GLOBS, ids=['coco', 'dota', 'ade20k'])
def test_test_split_is_held_out_and_changes_no_other_image(make, globs, tmp_path):
    def pixels(root, pattern):
        return [np.asarray(Image.open(p)) for p in sorted(root.glob(pattern))]

    kwargs = dict(num_train=2, num_val=2, img_size=64, shift=True)
    without, with_test = make(tmp_path / 'a', **kwargs), make(tmp_path / 'b', num_test=3, **kwargs)
    assert not list(without.glob(globs[2]))  # no test split unless asked for
    for pattern in globs[:2]:  # train and validation images are the same with or without a test split
        assert all(np.array_equal(x, y) for x, y in zip(pixels(without, pattern), pixels(with_test, pattern), strict=True))
    train, val, test = (pixels(with_test, g) for g in globs)
    assert len(test) == 3
    seen = [*train, *val]
    assert not any(np.array_equal(t, s) for t in test for s in seen)  # its own images, not copies

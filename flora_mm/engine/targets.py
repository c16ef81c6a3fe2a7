"""The three shipped adaptation targets (a shipped source model fine-tuned on a shifted synthetic domain): their
configs, source models, metrics and data, shared by the untuned paired study (``tools/reproduce.py``) and the
tuned, pre-registered comparison (:mod:`flora_mm.engine.comparison`)."""
from __future__ import annotations

from pathlib import Path

__all__ = ['QUICK_DATA', 'TASKS', 'ensure_task_data']

#: target config, shipped source model, primary metric (+ others), factor to percent, target data (train /
#: validation / test splits; the test split has its own random stream), the overrides of a test-size run, and
#: (where written) the per-image statistics a test run keeps for the bootstrap (flora_mm.engine.analysis)
TASKS = {
    'coco': dict(config='configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py',
                 source='flora_mm://mask_rcnn_atto_source_coco', metric='coco/bbox_mAP',
                 extra=('coco/segm_mAP', 'coco/bbox_mAP_50'), to_percent=100, image_stats='coco',
                 data=dict(maker='make_coco', root='data/target_coco', num_train=256, num_val=64, num_test=256,
                           img_size=128),
                 quick={'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1,
                        'default_hooks.checkpoint.interval': 1}),
    'dota': dict(config='configs/target/oriented-rcnn-le90_convnextv2-atto_flora-r10_400it_target-dota.py',
                 source='flora_mm://oriented_rcnn_atto_source_dota', metric='dota/mAP', extra=('dota/AP50', ),
                 to_percent=100, image_stats='dota',
                 data=dict(maker='make_dota', root='data/target_dota', num_train=256, num_val=64, num_test=256,
                           img_size=128),
                 quick={'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                        'default_hooks.checkpoint.interval': 2}),
    'ade20k': dict(config='configs/target/upernet_convnextv2-atto_flora-r10_2k_target-ade20k.py',
                   source='flora_mm://upernet_atto_source_ade20k', metric='mIoU', extra=('aAcc', 'mAcc'),
                   to_percent=1, image_stats='segmentation',
                   data=dict(maker='make_ade20k', root='data/target_ade20k', num_train=256, num_val=64,
                             num_test=256, img_size=128),
                   quick={'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                          'default_hooks.checkpoint.interval': 2}),
}
#: the data of a test-size run
QUICK_DATA = dict(num_train=8, num_val=4, num_test=4, img_size=64)


def ensure_task_data(task: str, root: Path, quick: bool = False) -> Path:
    """The task's target data under ``root`` (generated once; seed 0, shifted domain)."""
    from ..data import ensure_dataset
    spec = dict(TASKS[task]['data'], **(QUICK_DATA if quick else {}))
    return ensure_dataset(spec.pop('maker'), root / spec.pop('root'), seed=0, shift=True, **spec)

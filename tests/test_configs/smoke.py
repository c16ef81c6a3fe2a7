"""Smoke configs derived from the real ones: tiny backbones, tiny images, generated data in each task's format."""
from pathlib import Path

import torch
from mmengine.config import Config

from flora_mm.data import COCO_CLASSES, DOTA_CLASSES, make_ade20k, make_coco, make_dota

ROOT = Path(__file__).resolve().parents[2]
TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))
TINY_VIT = dict(embed_dim=32, depth=4, num_heads=4, mlp_dim=64)

TASK_CONFIGS = {
    'coco': 'configs/flora_convnext_coco.py',
    'dota': 'configs/flora_convnext_dota.py',
    'ade20k': 'configs/flora_convnext_ade20k.py',
    'internvit_ade20k': 'configs/flora_internvit_ade20k.py',
}


def _loader(cfg_loader, dataset: dict, pipeline: list, batch_size: int) -> None:
    cfg_loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    cfg_loader.dataset.update(dataset, pipeline=pipeline)


def _detection(cfg: Config, data: Path, size: int) -> None:
    cfg.model.backbone.update(arch=TINY_CONVNEXT, drop_path_rate=0.0, init_cfg=None)
    cfg.model.neck.update(in_channels=list(TINY_CONVNEXT['dims']), out_channels=32)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    roi = cfg.model.roi_head
    roi.bbox_roi_extractor.out_channels = 32
    roi.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=3)
    if 'mask_head' in roi:
        roi.mask_roi_extractor.out_channels = 32
        roi.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=3)
    cfg.model.train_cfg.rpn.sampler.num = 32
    cfg.model.train_cfg.rcnn.sampler.num = 32


def coco(cfg: Config, data: Path) -> None:
    make_coco(data, num_train=4, num_val=2, img_size=64)
    _detection(cfg, data, 64)
    meta = dict(classes=COCO_CLASSES)
    train = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
             dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]
    test = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
    common = dict(data_root=str(data), metainfo=meta)
    _loader(cfg.train_dataloader, dict(common, ann_file='annotations/instances_train2017.json',
                                       data_prefix=dict(img='train2017/')), train, 2)
    for key in ('val_dataloader', 'test_dataloader'):
        _loader(cfg[key], dict(common, ann_file='annotations/instances_val2017.json',
                               data_prefix=dict(img='val2017/')), test, 2)
        cfg[key.replace('dataloader', 'evaluator')] = dict(
            type='CocoMetric', ann_file=str(data / 'annotations/instances_val2017.json'), metric=['bbox', 'segm'])


def dota(cfg: Config, data: Path) -> None:
    make_dota(data, num_train=4, num_val=2, img_size=64)
    _detection(cfg, data, 64)
    cfg.model.roi_head.bbox_head.num_classes = len(DOTA_CLASSES)
    meta = dict(classes=DOTA_CLASSES)
    resize = dict(type='mmdet.Resize', scale=(64, 64), keep_ratio=True)
    train = [dict(type='mmdet.LoadImageFromFile'), dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
             dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')), resize, dict(type='mmdet.PackDetInputs')]
    test = [dict(type='mmdet.LoadImageFromFile'), resize,
            dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
            dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
            dict(type='mmdet.PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                        'scale_factor'))]
    _loader(cfg.train_dataloader, dict(data_root=str(data), metainfo=meta, ann_file='trainval/annfiles/',
                                       data_prefix=dict(img_path='trainval/images/')), train, 2)
    for key in ('val_dataloader', 'test_dataloader'):
        _loader(cfg[key], dict(data_root=str(data), metainfo=meta, ann_file='val/annfiles/',
                               data_prefix=dict(img_path='val/images/'), test_mode=True), test, 2)
        cfg[key.replace('dataloader', 'evaluator')] = dict(type='DOTAMetric', metric='mAP')


def _segmentation(cfg: Config, data: Path, size: int) -> None:
    make_ade20k(data, num_train=4, num_val=2, img_size=size)
    crop = (size, size)
    cfg.model.data_preprocessor.size = crop
    cfg.model.decode_head.update(channels=16, norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.auxiliary_head.update(channels=8, norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.test_cfg = dict(mode='whole')
    train = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
             dict(type='RandomCrop', crop_size=crop), dict(type='PackSegInputs')]
    test = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='PackSegInputs')]
    _loader(cfg.train_dataloader, dict(data_root=str(data), data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training')), train, 2)
    for key in ('val_dataloader', 'test_dataloader'):
        _loader(cfg[key], dict(data_root=str(data), data_prefix=dict(
            img_path='images/validation', seg_map_path='annotations/validation')), test, 1)


def ade20k(cfg: Config, data: Path) -> None:
    cfg.model.backbone.update(arch=TINY_CONVNEXT, drop_path_rate=0.0, init_cfg=None)
    _segmentation(cfg, data, 64)
    cfg.model.decode_head.in_channels = list(TINY_CONVNEXT['dims'])
    cfg.model.auxiliary_head.in_channels = TINY_CONVNEXT['dims'][2]


def internvit_ade20k(cfg: Config, data: Path) -> None:
    cfg.model.backbone.update(arch=TINY_VIT, img_size=56, drop_path_rate=0.0, init_cfg=None)
    _segmentation(cfg, data, 56)
    cfg.model.decode_head.in_channels = [32] * 4
    cfg.model.auxiliary_head.in_channels = 32


BUILDERS = dict(coco=coco, dota=dota, ade20k=ade20k, internvit_ade20k=internvit_ade20k)


def smoke_config(task: str, tmp: Path, iters: int = 2) -> Config:
    """The task's real config, shrunk: tiny model, generated data under ``tmp/data``, ``iters`` iterations
    with validation and a checkpoint at the end, work dir ``tmp/work``."""
    cfg = Config.fromfile(str(ROOT / TASK_CONFIGS[task]))
    BUILDERS[task](cfg, tmp / 'data')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.val_cfg, cfg.test_cfg = dict(type='ValLoop'), dict(type='TestLoop')
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=iters)]
    cfg.optim_wrapper.optimizer.lr = 1e-3
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        cfg.optim_wrapper.type = 'OptimWrapper'  # mmengine's AmpOptimWrapper needs a GPU
        cfg.optim_wrapper.pop('dtype', None)
    cfg.default_hooks.update(logger=dict(type='LoggerHook', interval=1),
                             checkpoint=dict(type='CheckpointHook', interval=iters, by_epoch=False))
    cfg.default_hooks.pop('visualization', None)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'), mp_cfg=dict(mp_start_method='fork'))
    cfg.log_processor = dict(by_epoch=False)
    cfg.work_dir = str(tmp / 'work')
    cfg.randomness = dict(seed=0)
    return cfg

# Source model for oriented detection: a light Oriented R-CNN (le90) on our shipped ConvNeXt-V2-atto
# (flora_mm://convnextv2_atto_source, frozen: neck and heads train on top of it), trained on the synthetic *source*
# domain in DOTA-v1.0 format (flora_mm.data.make_dota, shift=False: planes, ships and small vehicles in class
# colours on smooth backgrounds, 1024 training images of 128 px). tools/make_source_models.py generates the data,
# runs this config through tools/train.py and exports the neck and heads as
# flora_mm://oriented-rcnn_convnextv2-atto_source-dota.
_base_ = '../flora_convnext_dota.py'

pretrained = 'flora_mm://convnextv2_atto_source'
data_root = 'data/source_dota/'
classes = ('plane', 'ship', 'small-vehicle')
img_scale = (128, 128)
max_iters = 2400

model = dict(
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=pretrained),
                  adapter=None, frozen_stages=4),
    neck=dict(in_channels=[40, 80, 160, 320], out_channels=64),
    # anchors of 16-256 px (scale 4 instead of 8): at 128 px the objects are 25-50 px long
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=64),
                  bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=len(classes))),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), ann_file='trainval/annfiles/',
                 data_prefix=dict(img_path='trainval/images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), ann_file='val/annfiles/',
                 data_prefix=dict(img_path='val/images/'), pipeline=val_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min_ratio=0.01)
]
# AdamW for the randomly initialised heads; the target configs switch to the paper's SGD where compared
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='FrozenParamsCheckHook')]
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

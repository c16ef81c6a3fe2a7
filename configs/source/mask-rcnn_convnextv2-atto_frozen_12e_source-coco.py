# Source model of the demo and the adaptation study: a light Mask R-CNN on our shipped ConvNeXt-V2-atto
# (flora_mm://convnextv2_atto_source, kept frozen: neck and heads train on top of it), trained on the synthetic
# *source* domain in COCO format (flora_mm.data.make_coco, shift=False: three shapes with class colours on smooth
# backgrounds, 1024 training images). tools/make_source_models.py generates the data, runs this config through
# tools/train.py and exports the neck and heads as flora_mm://mask-rcnn_convnextv2-atto_source-coco.
# Light heads (64-channel FPN / RoI heads, 64 sampled RoIs) and 128-px images keep an iteration well under a
# second on 2 CPU cores. The demo (configs/target/) inherits this model and adapts it to the shifted target domain.
_base_ = '../flora_convnext_coco.py'

pretrained = 'flora_mm://convnextv2_atto_source'

data_root = 'data/source_coco/'
metainfo = dict(classes=('square', 'disc', 'triangle'), palette=[(220, 60, 50), (60, 200, 80), (60, 90, 230)])
img_scale = (128, 128)
max_epochs = 12

model = dict(
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=pretrained),
                  adapter=None, frozen_stages=4),
    neck=dict(in_channels=[40, 80, 160, 320], out_channels=64),
    # anchors of 16-256 px (scale 4 instead of 8): at 128 px the objects are 20-50 px wide
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_epochs))
custom_hooks = [dict(type='FrozenParamsCheckHook')]
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

# The demo: FLoRA on a small ConvNeXt-V2 (atto) + Mask R-CNN, trained and validated on the synthetic COCO-format
# demo data (tools/make_demo_data.py coco) on CPU. Light heads (64-channel FPN / RoI heads, 64 sampled RoIs) and
# 128-px images keep an iteration well under a second on 2 cores. The frozen base is our own ConvNeXt-V2-atto,
# pretrained on the synthetic shape source domain by tools/pretrain_base.py and shipped with the package
# (flora_mm/weights: SHA-256 checked, Apache-2.0).
_base_ = '../flora_convnext_coco.py'

pretrained = 'flora_mm://convnextv2_atto_source'

data_root = 'data/demo_coco/'
metainfo = dict(classes=('square', 'disc', 'triangle'), palette=[(220, 60, 50), (60, 200, 80), (60, 90, 230)])
img_scale = (128, 128)
max_epochs = 8

model = dict(
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=pretrained),
                  adapter=dict(type='FLoRA', rank=8, kernel_rank=2, scale=4.0)),
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
    batch_size=2,
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
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[6, 7], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=2e-4))
auto_scale_lr = dict(enable=False, base_batch_size=2)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

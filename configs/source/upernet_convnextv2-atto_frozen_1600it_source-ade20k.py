# Source model for semantic segmentation: a light UperNet on our shipped ConvNeXt-V2-atto
# (flora_mm://convnextv2_atto_source, frozen: decode and auxiliary heads train on top of it), trained on the
# synthetic *source* domain in ADE20K layout (flora_mm.data.make_ade20k, shift=False: sky, floor, buildings, trees
# and walls in class colours, 1024 training images of 128 px). tools/make_source_models.py generates the data,
# runs this config through tools/train.py and exports the heads as flora_mm://upernet_convnextv2-atto_source-ade20k.
_base_ = '../flora_convnext_ade20k.py'

pretrained = 'flora_mm://convnextv2_atto_source'
data_root = 'data/source_ade20k/'
classes = ('wall', 'building', 'sky', 'floor', 'tree')
crop_size = (128, 128)
max_iters = 1600
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=pretrained),
                  adapter=None, frozen_stages=4),
    decode_head=dict(in_channels=[40, 80, 160, 320], channels=64, num_classes=len(classes), norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=160, channels=32, num_classes=len(classes), norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min_ratio=0.01)
]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(by_epoch=False, interval=max_iters))
custom_hooks = [dict(type='FrozenParamsCheckHook')]
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

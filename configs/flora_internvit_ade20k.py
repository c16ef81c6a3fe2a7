# FLoRA on InternViT-6B + UperNet, ADE20K (paper Table 9): FLoRA on every linear layer, r = 16, s = 0.04;
# bf16 autocast and activation checkpointing so that it fits 80 GB GPUs. Crop 504 = 36 x 14 (patch 14).
_base_ = './flora_convnext_ade20k.py'

# InternViT-6B weights: InternVL's intern_vit_6b_224px.pth or the 448px-V1-0 release (48 blocks: arch='6b'). The
# 448px-V1-2 / V1-5 / V2_5 releases have 45 blocks: arch='6b-448px-v1.2' / '6b-448px-v1.5' / '6b-448px-v2.5'.
# Hugging Face releases load from their sharded folder (or model.safetensors.index.json); position embeddings are
# interpolated to the crop size. See docs/checkpoints.md.
pretrained = 'checkpoints/intern_vit_6b_224px.pth'
crop_size = (504, 504)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='InternViT',
        arch='6b',
        img_size=504,
        patch_size=14,
        drop_path_rate=0.4,
        with_cp=True,
        with_fpn=True,
        adapter=dict(type='FLoRA', rank=16, scale=0.04, targets=['linear']),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[3200, 3200, 3200, 3200], channels=1536),
    auxiliary_head=dict(in_channels=3200, channels=1536),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(336, 336)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 504), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 504), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')

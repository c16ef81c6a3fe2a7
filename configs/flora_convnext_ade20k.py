# FLoRA on ConvNeXt-V2-L + UperNet, ADE20K 512x512, 160k iterations (paper Table 9): AdamW lr 1e-4, wd 0.05,
# total batch 16 (8 GPUs x 2), linear warm-up then poly decay.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/models/convnextv2_large_flora.py'
]
custom_imports = dict(imports=['flora_mm.mm'], allow_failed_imports=False)

crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone={{_base_.convnextv2_large_flora}},
    decode_head=dict(in_channels={{_base_.convnextv2_large_channels}}, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=768, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

train_dataloader = dict(batch_size=2, num_workers=4)  # x 8 GPUs = 16

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AdapterOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]

# adapter-only checkpoints (adapters + neck/heads; the frozen base is rebuilt from `pretrained`, checked by SHA-256)
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook')]

# FLoRA on ConvNeXt-V2-L + Oriented R-CNN (le90), DOTA-v1.0 single-scale 1024x1024 split, 12 epochs
# (paper Table 9): SGD lr 5e-3, momentum 0.9, wd 1e-4, total batch 16 (8 GPUs x 2).
_base_ = ['mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py', './_base_/models/convnextv2_large_flora.py']
custom_imports = dict(imports=['flora_mm.mm'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.convnextv2_large_flora}},
    neck=dict(in_channels={{_base_.convnextv2_large_channels}}))

train_dataloader = dict(batch_size=2, num_workers=4)  # x 8 GPUs = 16

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AdapterOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))

# adapter-only checkpoints (adapters + neck/heads; the frozen base is rebuilt from `pretrained`, checked by SHA-256)
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook')]
auto_scale_lr = dict(enable=False, base_batch_size=16)

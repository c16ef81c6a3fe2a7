# FLoRA on ConvNeXt-V2-L + Mask R-CNN (FPN), COCO, 12 epochs (paper Table 9): AdamW lr 1e-4, wd 0.05,
# total batch 32 (8 GPUs x 4). FLoRA on every conv and linear layer of the backbone, r3 = 2, s = 4;
# rank 42 gives 12.84M adapter parameters, the budget of LoRA r=8 (12.95M).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/models/convnextv2_large_flora.py']
custom_imports = dict(imports=['flora_mm.mm'], allow_failed_imports=False)

model = dict(
    backbone={{_base_.convnextv2_large_flora}},
    neck=dict(in_channels={{_base_.convnextv2_large_channels}}))

train_dataloader = dict(batch_size=4, num_workers=4)  # x 8 GPUs = 32

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='AdapterOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))

# adapter-only checkpoints (adapters + neck/heads; the frozen base is rebuilt from `pretrained`, checked by SHA-256)
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook')]
auto_scale_lr = dict(enable=False, base_batch_size=32)

# The paper's backbone, shared by the three ConvNeXt-V2-L task configs (COCO, DOTA, ADE20K): ConvNeXt-V2-L
# (ImageNet-22k fine-tuned weights: official .pt or timm state dict, see docs/checkpoints.md) with FLoRA on every
# conv and linear layer, r3 = 2, s = 4; rank 42 gives 12.84M adapter parameters, LoRA r=8's budget (12.95M).
# Task configs take it as `backbone={{_base_.convnextv2_large_flora}}` and their neck / head input widths from
# `convnextv2_large_channels`.
pretrained = 'checkpoints/convnextv2_large_22k_224_ema.pt'
convnextv2_large_channels = [192, 384, 768, 1536]
convnextv2_large_flora = dict(
    _delete_=True,
    type='ConvNeXtV2',
    arch='large',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.4,
    with_cp=False,
    adapter=dict(type='FLoRA', rank=42, kernel_rank=2, scale=4.0),
    init_cfg=dict(type='Pretrained', checkpoint=pretrained))

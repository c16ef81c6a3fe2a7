# LoRA r=25 on every conv (loralib ConvLoRA, rank r*k) and linear layer: 40.46M parameters; alpha = r (scale 1).
_base_ = '../flora_convnext_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=25, alpha=25)))

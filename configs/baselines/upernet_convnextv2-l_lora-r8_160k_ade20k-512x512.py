# LoRA r=8 on every conv (loralib ConvLoRA, rank r*k) and linear layer: 12.95M parameters; alpha = r (scale 1).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=8, alpha=8)))

# LoRA r=16 on every conv (loralib ConvLoRA, rank r*k) and linear layer: 25.89M parameters; alpha = r (scale 1).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=16, alpha=16)))

# DoRA r=16 (LoRA's update + per-channel magnitude) on every conv and linear layer; alpha = r.
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='DoRA', rank=16, alpha=16)))

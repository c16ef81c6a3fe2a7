# DoRA r=25 (LoRA's update + per-channel magnitude) on every conv and linear layer; alpha = r.
_base_ = '../flora_convnext_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='DoRA', rank=25, alpha=25)))

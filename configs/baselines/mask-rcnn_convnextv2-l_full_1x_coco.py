# Full fine-tuning: every backbone parameter trains (no adapter).
_base_ = '../flora_convnext_coco.py'

model = dict(backbone=dict(adapter=None))
custom_hooks = []

# Full fine-tuning: every backbone parameter trains (no adapter).
_base_ = '../flora_convnext_dota.py'

model = dict(backbone=dict(adapter=None))
custom_hooks = []

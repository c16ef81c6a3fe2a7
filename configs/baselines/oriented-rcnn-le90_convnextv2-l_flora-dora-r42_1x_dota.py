# FLoRA r=42, r3=2, s=4 (the paper config) with DoRA's magnitude / direction split over the Tucker-updated weight.
_base_ = '../flora_convnext_dota.py'

model = dict(backbone=dict(adapter=dict(dora=True)))

# FLoRA r=84, r3=2, s=4: 25.98M parameters (matches LoRA r=16).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(rank=84)))

# FLoRA r=129, r3=2, s=4: 40.38M parameters (matches LoRA r=25).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(rank=129)))

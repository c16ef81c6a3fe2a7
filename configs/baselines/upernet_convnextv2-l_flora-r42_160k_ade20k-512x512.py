# FLoRA r=42, r3=2, s=4: 12.84M parameters (matches LoRA r=8).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(rank=42)))

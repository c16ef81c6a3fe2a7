# FLoRA r=32, s=0.04 on every linear layer of InternViT-6B.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(rank=32)))

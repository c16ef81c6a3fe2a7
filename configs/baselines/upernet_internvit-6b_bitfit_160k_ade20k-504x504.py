# BitFit: only the biases of InternViT-6B train.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='BitFit')))

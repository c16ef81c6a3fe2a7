# Base: the backbone frozen entirely (no adapter); only neck and heads train.
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=None, frozen_stages=4))

# Base: InternViT-6B frozen (no adapter); the feature pyramid, neck and heads train.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=None, frozen_stages=48))

# DoRA r=32 on every linear layer of InternViT-6B.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='DoRA', rank=32, alpha=32, targets=['linear'])))

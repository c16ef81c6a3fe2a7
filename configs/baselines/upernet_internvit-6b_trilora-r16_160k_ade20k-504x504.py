# TriLoRA r=16 (diagonal core, dW = s U diag(d) V^T) on every linear layer of InternViT-6B.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='TriLoRA', rank=16, scale=1.0, targets=['linear'])))

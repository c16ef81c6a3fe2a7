# LoRA r=16 on every linear layer of InternViT-6B.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=16, alpha=16, targets=['linear'])))

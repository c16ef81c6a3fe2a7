# IA3 (subspace-tuning paper eq. 7) on every linear layer of InternViT-6B.
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='IA3', targets=['linear'])))

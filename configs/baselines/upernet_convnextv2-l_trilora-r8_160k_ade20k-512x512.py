# TriLoRA r=8 (the diagonal-core form ADB: dW = s U diag(d) V^T; loralib's matrix for convolutions, rank r*k) on
# every conv and linear layer; scale 1, as LoRA's alpha = r. Budget: LoRA r=8's plus the rank (README budget table).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='TriLoRA', rank=8, scale=1.0)))

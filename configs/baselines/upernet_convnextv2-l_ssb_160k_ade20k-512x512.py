# SSB: learnable scales of every conv and linear layer's output and input channels (W = diag(l) W0 diag(d)),
# initialised to 1 (subspace-tuning paper eq. 7).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='SSB')))

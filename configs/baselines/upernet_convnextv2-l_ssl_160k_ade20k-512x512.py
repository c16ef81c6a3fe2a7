# SSL: learnable scales of every conv and linear layer's input channels (W = W0 diag(d)), initialised to 1
# (subspace-tuning paper eq. 7).
_base_ = '../flora_convnext_ade20k.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='SSL')))

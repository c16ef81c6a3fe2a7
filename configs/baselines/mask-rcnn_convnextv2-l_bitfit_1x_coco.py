# BitFit: only the biases of the backbone train (302K for ConvNeXt-V2-L).
_base_ = '../flora_convnext_coco.py'

model = dict(backbone=dict(adapter=dict(_delete_=True, type='BitFit')))

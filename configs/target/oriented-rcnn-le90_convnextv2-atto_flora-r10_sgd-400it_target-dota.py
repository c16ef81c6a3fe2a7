# The optimizer mechanism of the adaptation comparison (tools/reproduce.py, MECHANISMS['optimizer']): the DOTA
# target config with the paper's DOTA recipe (Table 9: SGD, lr 5e-3, momentum 0.9, weight decay 1e-4) in place of
# AdamW 2e-4, for every trained parameter (adapter, norms and heads). Same schedule, warm-up and data.
_base_ = './oriented-rcnn-le90_convnextv2-atto_flora-r10_400it_target-dota.py'

optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=5e-3, momentum=0.9, weight_decay=1e-4))

# LoRA r=8 (as mask-rcnn_convnextv2-l_lora-r8_1x_coco.py) with the MPC_o regulariser of the subspace-tuning paper (eq.
# 20): loss_mpc = mpc_weight x mean over layers of ||V^T V - I||^2 + ||U^T U - I||^2, logged as its own loss key.
_base_ = './mask-rcnn_convnextv2-l_lora-r8_1x_coco.py'

model = dict(backbone=dict(adapter=dict(mpc='orthogonal', mpc_weight=0.1)))

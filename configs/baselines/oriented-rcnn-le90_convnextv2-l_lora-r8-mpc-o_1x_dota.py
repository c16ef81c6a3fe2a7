# LoRA r=8 (as oriented-rcnn-le90_convnextv2-l_lora-r8_1x_dota.py) with the MPC_o regulariser of the subspace-tuning
# paper (eq. 20): loss_mpc = mpc_weight x mean over layers of ||V^T V - I||^2 + ||U^T U - I||^2, logged as its own
# loss key.
_base_ = './oriented-rcnn-le90_convnextv2-l_lora-r8_1x_dota.py'

model = dict(backbone=dict(adapter=dict(mpc='orthogonal', mpc_weight=0.1)))

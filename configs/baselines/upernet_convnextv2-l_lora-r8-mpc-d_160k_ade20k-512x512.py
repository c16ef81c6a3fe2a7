# LoRA r=8 (as upernet_convnextv2-l_lora-r8_160k_ade20k-512x512.py) with the MPC_d regulariser of the subspace-tuning
# paper (eq. 21): loss_mpc = mpc_weight x mean over layers of ||V^T V - I||^2 + ||U^T U - diag(U^T U)||^2, logged as
# its own loss key.
_base_ = './upernet_convnextv2-l_lora-r8_160k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(mpc='diagonal', mpc_weight=0.1)))

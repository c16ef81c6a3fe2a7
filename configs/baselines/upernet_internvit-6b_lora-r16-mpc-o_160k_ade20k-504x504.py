# LoRA r=16 (as upernet_internvit-6b_lora-r16_160k_ade20k-504x504.py) with the MPC_o regulariser (subspace-tuning
# paper eq. 20), logged as loss_mpc.
_base_ = './upernet_internvit-6b_lora-r16_160k_ade20k-504x504.py'

model = dict(backbone=dict(adapter=dict(mpc='orthogonal', mpc_weight=0.1)))

# LoRA r=16 (as lora_r16.py) with the MPC_o regulariser (subspace-tuning paper eq. 20), logged as loss_mpc.
_base_ = './lora_r16.py'

model = dict(backbone=dict(adapter=dict(mpc='orthogonal', mpc_weight=0.1)))

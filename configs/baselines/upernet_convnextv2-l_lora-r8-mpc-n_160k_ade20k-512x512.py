# LoRA r=8 with MPC_n (subspace-tuning paper eq. 25): a GELU between the factors, dW x -> s h(x A^T) B^T. Only layers
# with a factorised branch take it: the linear layers (loralib's conv form has none), so this adapts fewer layers than
# upernet_convnextv2-l_lora-r8_160k_ade20k-512x512.py; not mergeable (tools/merge_adapter.py refuses, adapter-only
# checkpoints work).
_base_ = './upernet_convnextv2-l_lora-r8_160k_ade20k-512x512.py'

model = dict(backbone=dict(adapter=dict(mpc='nonlinear', targets=['linear'])))

# LoRA r=8 with MPC_n (subspace-tuning paper eq. 25): a GELU between the factors, dW x -> s h(x A^T) B^T. Only layers
# with a factorised branch take it: the linear layers (loralib's conv form has none), so this adapts fewer layers
# than lora_r8.py; not mergeable (tools/merge_adapter.py refuses, adapter-only checkpoints work).
_base_ = './lora_r8.py'

model = dict(backbone=dict(adapter=dict(mpc='nonlinear', targets=['linear'])))

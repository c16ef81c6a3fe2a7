# Full fine-tuning of InternViT-6B: ~6B trainable parameters do not fit plain DDP on 80 GB GPUs (weights, grads
# and AdamW states alone are ~96 GB in fp32), so this baseline runs on mmengine's FlexibleRunner with the FSDP
# strategy (parameters, gradients and optimizer states sharded over the GPUs; bf16 compute).
# Launch as usual: tools/dist_train.sh configs/baselines/upernet_internvit-6b_full-fsdp_160k_ade20k-504x504.py 8
_base_ = '../flora_internvit_ade20k.py'

model = dict(backbone=dict(adapter=None))
custom_hooks = []

runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        # one FSDP unit per transformer block; heads stay in the root unit (mmseg calls decode_head.loss, not
        # forward, which a separately wrapped head would need to gather its parameters)
        auto_wrap_policy=dict(type='flora_mm.engine.fsdp.block_wrap_policy'),
        use_orig_params=True),
    state_dict_cfg='full')
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))

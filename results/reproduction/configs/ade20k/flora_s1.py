_base_ = "../../../../configs/reproduction/ade20k.py"
model = dict(backbone={'adapter': {'_delete_': True, 'type': 'FLoRA', 'kernel_rank': 2, 'scale': 4.0, 'rank': 10}, 'init_cfg': {'type': 'Pretrained', 'checkpoint': 'checkpoints/convnextv2_atto_synthetic_source.pth'}})
randomness = dict(seed=1, deterministic=False)
train_dataloader = dict(dataset=dict(data_root="data/repro_ade20k/"))
val_dataloader = dict(dataset=dict(data_root="data/repro_ade20k/"))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=400, val_interval=400)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=400, eta_min_ratio=0.01)
]
default_hooks = dict(checkpoint=dict(interval=400))

_base_ = "../../../../configs/reproduction/dota.py"
model = dict(backbone={'adapter': {'_delete_': True, 'type': 'FLoRA', 'kernel_rank': 2, 'scale': 4.0, 'rank': 10}, 'init_cfg': {'type': 'Pretrained', 'checkpoint': 'checkpoints/convnextv2_atto_synthetic_source.pth'}})
randomness = dict(seed=0, deterministic=False)
train_dataloader = dict(dataset=dict(data_root="data/repro_dota/"))
val_dataloader = dict(dataset=dict(data_root="data/repro_dota/"))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=600, val_interval=600)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=600, eta_min_ratio=0.01)
]
default_hooks = dict(checkpoint=dict(interval=600))

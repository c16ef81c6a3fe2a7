_base_ = "../../../../configs/reproduction/coco.py"
model = dict(backbone={'adapter': {'_delete_': True, 'type': 'DoRA', 'rank': 2, 'alpha': 2}, 'init_cfg': {'type': 'Pretrained', 'checkpoint': 'checkpoints/convnextv2_atto_synthetic_source.pth'}})
randomness = dict(seed=0, deterministic=False)
train_dataloader = dict(dataset=dict(data_root="data/repro_coco/"))
val_dataloader = dict(dataset=dict(data_root="data/repro_coco/"))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file="data/repro_coco/annotations/instances_val2017.json")
test_evaluator = val_evaluator
train_cfg = dict(max_iters=400, val_interval=400)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=400, eta_min_ratio=0.01)
]
default_hooks = dict(checkpoint=dict(interval=400))

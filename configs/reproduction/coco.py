# Reproduction (docs/reproduction.md), instance segmentation: the demo's model (FLoRA on our pretrained
# ConvNeXt-V2-atto + light Mask R-CNN) on the shifted synthetic COCO data (tools/reproduce.py generates
# data/repro_coco), iteration-based. tools/reproduce.py switches the method with --cfg-options.
_base_ = '../demo/flora_convnext-atto_mask-rcnn_demo-coco.py'

data_root = 'data/repro_coco/'
max_iters = 400

train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min_ratio=0.01)
]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook'),
                dict(type='DeltaWeightStatsHook', interval=50, per_layer=False)]

# The demo: domain adaptation of a detector. The shipped source Mask R-CNN (configs/source/, our ConvNeXt-V2-atto +
# light heads trained on the clean source domain) is fine-tuned on the shifted *target* domain
# (flora_mm.data.make_coco(shift=True): the same three classes with textures, sensor noise, clutter and no colour cue;
# tools/demo.py generates data/target_coco) with FLoRA on every conv and linear layer of the backbone at LoRA r=2's
# parameter budget (rank 10: 215,797 vs 226,392 parameters, 6% of the backbone). tools/demo.py runs it next to the
# zero-shot source model, the frozen backbone (Base) and full fine-tuning, switching the method with --cfg-options
# (model.backbone.adapter=None, model.backbone.frozen_stages=4 / -1).
_base_ = ['../source/mask-rcnn_convnextv2-atto_frozen_12e_source-coco.py', '../_base_/schedules/warmup_cosine.py']

load_from = 'flora_mm://mask_rcnn_atto_source_coco'
data_root = 'data/target_coco/'
max_epochs = 6

model = dict(backbone=dict(frozen_stages=-1,
                            adapter=dict(_delete_=True, type='FLoRA', rank=10, kernel_rank=2, scale=4.0)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
# three disjoint splits: train2017 (training), val2017 (every choice: tools/tune.py, schedules, the demo's table),
# test2017 (held out; drawn from its own random stream, flora_mm.data.split_streams)
test_dataloader = dict(dataset=dict(data_root=data_root, ann_file='annotations/instances_test2017.json',
                                    data_prefix=dict(img='test2017/')))
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = dict(ann_file=data_root + 'annotations/instances_test2017.json')

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = {{_base_.warmup50_cosine_epoch}}
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_epochs))
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook')]

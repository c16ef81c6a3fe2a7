# Adaptation to the shifted target domain, oriented detection: the shipped source Oriented R-CNN
# (flora_mm://oriented_rcnn_atto_source_dota, configs/source/) fine-tuned on flora_mm.data.make_dota(shift=True)
# (data/target_dota: the same three classes with textures, sensor noise, clutter and no colour cue), with FLoRA at
# LoRA r=2's budget (rank 10). Switch the method with --cfg-options (model.backbone.adapter=...,
# model.backbone.frozen_stages=4 for the frozen backbone).
_base_ = ['../source/oriented-rcnn-le90_convnextv2-atto_frozen_2400it_source-dota.py',
          '../_base_/schedules/warmup_cosine.py']

load_from = 'flora_mm://oriented_rcnn_atto_source_dota'
data_root = 'data/target_dota/'
max_iters = 400

model = dict(backbone=dict(frozen_stages=-1,
                            adapter=dict(_delete_=True, type='FLoRA', rank=10, kernel_rank=2, scale=4.0)))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
# three disjoint splits: trainval (training), val (every choice), test (held out, its own random stream)
test_dataloader = dict(dataset=dict(data_root=data_root, ann_file='test/annfiles/',
                                    data_prefix=dict(img_path='test/images/')))

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = {{_base_.warmup50_cosine_iter}}
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [dict(type='FrozenParamsCheckHook'), dict(type='AdapterCheckpointHook')]

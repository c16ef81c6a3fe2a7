# The adaptation schedule of the target configs (configs/target/): a linear warm-up from 1% of the learning rate over
# the first 50 iterations, then a cosine decay to 1% of it over the whole run, stepped per iteration
# (warmup50_cosine_iter: DOTA, ADE20K) or per epoch (warmup50_cosine_epoch: COCO).
# A config takes one as `param_scheduler = {{_base_.warmup50_cosine_iter}}`: named pieces, because mmengine refuses a
# key that two bases define and every target already inherits a param_scheduler from its source config.
# The cosine's `end` is left out on purpose: mmengine's Runner sets a scheduler's missing `end` to the train loop's
# max_iters (by_epoch=False) or max_epochs, so one schedule serves every length and follows a --cfg-options change
# of train_cfg.max_iters / max_epochs.
warmup50_cosine_iter = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, eta_min_ratio=0.01)
]
warmup50_cosine_epoch = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, eta_min_ratio=0.01)
]

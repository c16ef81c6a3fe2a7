"""A test-only hook (imported by configs through custom_imports): each rank saves its adapter tensors."""
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from flora_mm.adapters import adapter_state_dict


@HOOKS.register_module()
class RankAdapterDumpHook(Hook):

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.cpu() for k, v in adapter_state_dict(model).items()}
        torch.save(state, Path(runner.work_dir) / f'adapter_rank{get_rank()}.pth')


@HOOKS.register_module()
class RankTrainInfoHook(Hook):
    """Each rank saves, as JSON: its model's trainable parameter names (wrapper prefixes removed), the number of
    FSDP units, and the log variables of every training iteration."""

    def before_train(self, runner):
        from torch.distributed.fsdp import FullyShardedDataParallel
        self.info = dict(trainable=sorted(n.replace('_fsdp_wrapped_module.', '').removeprefix('module.')
                                          for n, p in runner.model.named_parameters() if p.requires_grad),
                         fsdp_units=sum(isinstance(m, FullyShardedDataParallel) for m in runner.model.modules()),
                         losses=[])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.info['losses'].append({k: float(v) for k, v in outputs.items()})

    def after_train(self, runner):
        import json
        (Path(runner.work_dir) / f'train_info_rank{get_rank()}.json').write_text(json.dumps(self.info))

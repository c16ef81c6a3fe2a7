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

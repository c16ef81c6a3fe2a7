"""What tools/train.py and tools/test.py share: the run config (command-line overrides, work dir, distributed
settings for machines without GPUs) and the runner it builds."""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .adapter_checkpoint import AdapterCheckpointHook

__all__ = ['load_run_config', 'build_runner', 'shutdown_distributed']


def load_run_config(config: str, launcher: str = 'none', cfg_options: dict | None = None,
                    work_dir: str | None = None) -> Config:
    """Load ``config``, apply ``--cfg-options``, choose the work dir (``./work_dirs/<config name>`` by default),
    make sure adapter-only checkpoints load safely (see :class:`AdapterCheckpointHook`) and, for a distributed launch without CUDA, use gloo and a DDP wrapper without ``device_ids``."""
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    hooks = cfg.get('custom_hooks') or []
    if not any(h.get('type') in ('AdapterCheckpointHook', AdapterCheckpointHook) for h in hooks):
        # loading an adapter-only checkpoint (resume, load_from, test) must rebuild the base first
        cfg.custom_hooks = [*hooks, dict(type='AdapterCheckpointHook', save=False)]
    if launcher != 'none' and not torch.cuda.is_available():
        env = cfg.setdefault('env_cfg', {})
        if env.get('dist_cfg', {}).get('backend', 'nccl') == 'nccl':  # NCCL needs GPUs
            print_log('no CUDA device: using the gloo backend instead of nccl', logger='current')
            env.setdefault('dist_cfg', {})['backend'] = 'gloo'
        strategy = cfg.get('strategy') or {}
        if cfg.get('runner_type') and 'FSDP' in str(strategy.get('type', '')):
            # FSDP on CPU processes: mmengine passes device_id=LOCAL_RANK, which FSDP takes for a CUDA index
            strategy.setdefault('model_wrapper', {}).setdefault('device_id', 'cpu')
            return cfg
        # DDP of a CPU module takes no device_ids (mmengine passes [LOCAL_RANK] by default)
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper.setdefault('device_ids', None)
        cfg.model_wrapper_cfg = wrapper
    return cfg


def build_runner(cfg: Config) -> Runner:
    """mmengine's ``Runner``, or the config's ``runner_type`` (e.g. ``FlexibleRunner`` for FSDP)."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def shutdown_distributed() -> None:
    """Destroy the default process group, if any, after a run that finished on every rank (not called when a rank
    raised: torchrun then stops the others). mmengine leaves the group alive; letting the
    interpreter tear it down was seen to abort a gloo rank at exit ("terminate called without an active
    exception") after a finished FSDP run, failing the launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank finished: none is still using the group
        torch.distributed.destroy_process_group()

"""What tools/train.py and tools/test.py share: the run config (command-line overrides, work dir, distributed
settings for machines without GPUs) and the runner it builds."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .adapter_checkpoint import AdapterCheckpointHook

__all__ = ['check_run_files', 'config_dicts', 'evaluate_on_validation', 'load_run_config', 'build_runner',
           'shutdown_distributed']


def load_run_config(config: str, launcher: str = 'none', cfg_options: dict | None = None,
                    work_dir: str | None = None, check_base: bool = True) -> Config:
    """Load ``config``, apply ``--cfg-options``, choose the work dir (``./work_dirs/<config name>`` by default),
    make sure adapter-only checkpoints load safely (see :class:`AdapterCheckpointHook`; ``check_base=False``
    skips its base check) and, for a distributed launch without CUDA, use gloo and a DDP wrapper without ``device_ids``."""
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    hooks = cfg.get('custom_hooks') or []
    ours = [h for h in hooks if h.get('type') in ('AdapterCheckpointHook', AdapterCheckpointHook)]
    if not ours:
        # loading an adapter-only checkpoint (resume, load_from, test) must rebuild the base first
        ours = [dict(type='AdapterCheckpointHook', save=False)]
        hooks = [*hooks, *ours]
    if not check_base:  # the explicit override of the base check (tools/test.py --skip-base-check)
        for hook in ours:
            hook['check_base'] = False
    cfg.custom_hooks = hooks
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


def evaluate_on_validation(cfg: Config) -> None:
    """Point the test loop at the validation split (``tools/test.py --split val``): ``test_dataloader`` and
    ``test_evaluator`` become copies of ``val_dataloader`` and ``val_evaluator``."""
    missing = [key for key in ('val_dataloader', 'val_evaluator') if not cfg.get(key)]
    if missing:
        raise ValueError(f'{cfg.filename}: --split val needs {" and ".join(missing)} in the config')
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)


#: Where to find out how to get each kind of missing file.
DATA_HELP = ('docs/datasets.md says how to lay out COCO / DOTA / ADE20K, and how to train a paper config on '
             'generated data: python tools/make_demo_data.py coco --root data')
CHECKPOINT_HELP = 'docs/checkpoints.md says which pretrained files fit and where to put them'


def _datasets(dataset: Any) -> list[dict]:
    """The leaf dataset configs of a (possibly wrapped: Concat / Repeat / ClassBalanced) dataset config."""
    if not isinstance(dataset, dict):
        return []
    inner = dataset.get('datasets') or ([dataset['dataset']] if isinstance(dataset.get('dataset'), dict) else [])
    return [d for sub in inner for d in _datasets(sub)] if inner else [dataset]


def _local(path: Any) -> str | None:
    path = str(path)
    return None if '://' in path else osp.expanduser(path)


def config_dicts(node: Any) -> list[dict]:
    """Every dict inside a config value (nested dicts, lists, tuples), outermost first: what the config walkers of
    flora_mm (files to check, merged-config clean-up) look through."""
    if isinstance(node, dict):
        return [node, *(d for value in node.values() for d in config_dicts(value))]
    if isinstance(node, (list, tuple)):
        return [d for value in node for d in config_dicts(value)]
    return []


def _pretrained_paths(node: Any) -> list[str]:
    return [d['init_cfg']['checkpoint'] for d in config_dicts(node) if isinstance(d.get('init_cfg'), dict)
            and d['init_cfg'].get('type') == 'Pretrained' and d['init_cfg'].get('checkpoint')]


def check_run_files(cfg: Config, mode: str) -> None:
    """Before anything is built: the files a ``mode`` ('train' / 'test') run reads exist -- each dataset's
    ``data_root`` and ``ann_file`` (train and val loaders for training, the test loader for testing), the
    local ``Pretrained`` checkpoints of the model and ``load_from``. Raises ``FileNotFoundError`` listing every
    missing one and where to read how to get it, instead of failing after a large model was built."""
    loaders = ('train_dataloader', 'val_dataloader') if mode == 'train' else ('test_dataloader', )
    missing, kinds = [], set()
    for key in loaders:
        if key == 'val_dataloader' and not cfg.get('val_cfg'):
            continue
        for dataset in _datasets((cfg.get(key) or {}).get('dataset')):
            root = dataset.get('data_root') or ''
            paths = [('data_root', root)] if root else []
            if dataset.get('ann_file'):
                paths.append(('ann_file', osp.join(root, dataset['ann_file'])))
            for what, path in paths:
                local = _local(path)
                if local is not None and not osp.exists(local):
                    missing.append(f'{key}.dataset.{what}: {path}')
                    kinds.add('data')
    for path in _pretrained_paths(cfg.get('model')):
        local = _local(path)
        if local is not None and not osp.exists(local):
            missing.append(f'model Pretrained init_cfg checkpoint: {path}')
            kinds.add('checkpoint')
    load_from = cfg.get('load_from')
    if load_from and _local(load_from) is not None and not osp.exists(_local(load_from)):
        missing.append(f'load_from: {load_from}')
    if missing:
        help_lines = ([DATA_HELP] if 'data' in kinds else []) + ([CHECKPOINT_HELP] if 'checkpoint' in kinds else [])
        raise FileNotFoundError(f'{cfg.filename}: {len(missing)} file(s) this {mode} run reads do not exist:\n  '
                                + '\n  '.join(missing) + ''.join(f'\n{h}' for h in help_lines))


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

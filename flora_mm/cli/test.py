"""Evaluate a checkpoint with mmengine's Runner (mmdet / mmseg / mmrotate configs), shaped like mmdet's
tools/test.py; run as ``tools/test.py`` or ``python -m flora_mm.cli.test``.

    tools/test.py CONFIG CHECKPOINT            # full or adapter-only checkpoint
    tools/test.py CONFIG --adapter ADAPTER     # base weights from the config's Pretrained init_cfg

An adapter-only checkpoint (see ``AdapterCheckpointHook``) is checked against the model -- keys, shapes and the
SHA-256 of the pretrained base -- and the base is loaded from the config before the adapter.
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner.checkpoint import CheckpointLoader

import flora_mm.mm  # noqa: F401
from flora_mm.engine import is_adapter_only
from flora_mm.engine.launch import (build_runner, check_run_files, evaluate_on_validation, load_run_config,
                                    shutdown_distributed)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (flora_mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (full or adapter-only)')
    parser.add_argument('--adapter', help='adapter-only checkpoint to evaluate on the config\'s pretrained base')
    parser.add_argument('--work-dir', help='the directory to save the evaluation metrics')
    parser.add_argument('--out', help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--skip-base-check', action='store_true',
                        help='load an adapter-only checkpoint even if the config\'s pretrained base is not the file '
                             '(SHA-256) it was trained on, or that file was not recorded')
    parser.add_argument('--split', choices=['test', 'val'], default='test',
                        help='evaluate on the config\'s test split (default) or on its validation split '
                             '(val_dataloader / val_evaluator)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings in the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if (args.checkpoint is None) == (args.adapter is None):
        parser.error('give exactly one of CHECKPOINT and --adapter ADAPTER')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = load_run_config(args.config, args.launcher, args.cfg_options, args.work_dir,
                          check_base=not args.skip_base_check)
    if args.split == 'val':
        evaluate_on_validation(cfg)
    if args.adapter is not None:
        ckpt = CheckpointLoader.load_checkpoint(args.adapter, map_location='cpu')
        if not is_adapter_only(ckpt):
            raise ValueError(f'--adapter {args.adapter}: not an adapter-only checkpoint; pass it as CHECKPOINT')
    cfg.load_from = args.checkpoint or args.adapter
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError('--out must be a .pkl file')
        cfg.test_evaluator = [*cfg.test_evaluator] if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    check_run_files(cfg, 'test')
    build_runner(cfg).test()
    shutdown_distributed()


if __name__ == '__main__':
    main()

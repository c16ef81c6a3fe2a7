#!/usr/bin/env python
"""Fold a trained adapter into its base weights: write a plain checkpoint and a config without ``adapter``.

    tools/merge_adapter.py CONFIG CHECKPOINT OUT_DIR

CHECKPOINT is a full checkpoint or an adapter-only one (the base then comes from the config's Pretrained
``init_cfg``, checked against the SHA-256 the adapter recorded).

The merged model has exactly the state_dict keys of the un-adapted model (adapted layers become plain
``nn.Conv2d`` / ``nn.Linear``), so the stock runner of mmdet / mmseg / mmrotate evaluates and deploys it with no
adapter code (flora_mm's own backbones still need ``custom_imports``). Refuses to write if a merged weight is
not finite; the input checkpoint is only read.
"""
import argparse
from pathlib import Path


import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader

import flora_mm  # noqa: F401
from flora_mm.adapters import AdapterConfig, merge_adapters, state_dict_mismatches
from flora_mm.engine import is_adapter_only, load_adapter_checkpoint


def merge(config: str, checkpoint: str, out_dir: str) -> tuple[Path, Path]:
    """Returns the paths of the merged checkpoint and config."""
    cfg = Config.fromfile(config)
    if cfg.model.backbone.get('adapter') is None:
        raise ValueError(f'{config} configures no model.backbone.adapter: nothing to merge')
    init_default_scope(cfg.get('default_scope'))
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if is_adapter_only(ckpt):  # base weights from the config's Pretrained init_cfg, checked by hash
        model = MODELS.build(cfg.model)
        load_adapter_checkpoint(model, ckpt, init_base=True)
    else:
        cfg.model.backbone.init_cfg = None  # the checkpoint has everything
        model = MODELS.build(cfg.model)
        state = ckpt.get('state_dict', ckpt)
        problems = state_dict_mismatches(model.state_dict(), state)
        if problems:
            raise KeyError(f'{checkpoint} does not fit {config}:\n  ' + '\n  '.join(problems))
        model.load_state_dict(state)
    merge_adapters(model)  # raises FloatingPointError before touching anything if a merged weight is not finite
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(config).stem + '_merged'
    adapter = AdapterConfig.from_dict(cfg.model.backbone.adapter.to_dict()).to_dict()  # plain types only
    meta = dict(ckpt.get('meta', {}), flora_mm=dict(merged_from=str(checkpoint), adapter=adapter))
    ckpt_path = out / f'{name}.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=meta), ckpt_path)
    cfg.model.backbone.adapter = None
    cfg.load_from = str(ckpt_path)
    cfg_path = out / f'{name}.py'
    cfg.dump(str(cfg_path))
    return ckpt_path, cfg_path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir')
    args = parser.parse_args()
    ckpt_path, cfg_path = merge(args.config, args.checkpoint, args.out_dir)
    print(f'merged checkpoint: {ckpt_path}\nconfig without adapter: {cfg_path}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Fold a trained adapter into its base weights: write a plain checkpoint and a config that stock mm tools load.

    tools/merge_adapter.py CONFIG CHECKPOINT OUT_DIR

CHECKPOINT is a full checkpoint or an adapter-only one (the base then comes from the config's Pretrained
``init_cfg``, checked against the SHA-256 the adapter recorded).

The merged model has exactly the state_dict keys of the un-adapted model (adapted layers become plain
``nn.Conv2d`` / ``nn.Linear``), and the written config has no ``adapter``, no flora_mm hooks or optimizer
constructor and, for stock backbones (ResNet, Swin...), no ``flora_mm`` in ``custom_imports``: the stock runner of
mmdet / mmseg / mmrotate evaluates and deploys it with flora_mm not installed. flora_mm's own backbones
(ConvNeXtV2, InternViT) still need ``custom_imports=dict(imports=['flora_mm.mm'])`` for their classes (printed).
Refuses to write if a merged weight is not finite; the input checkpoint is only read. The logic is
:func:`flora_mm.engine.export.merge_checkpoint`.
"""
import argparse

import flora_mm.mm  # noqa: F401
from flora_mm.engine.export import merge_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir')
    args = parser.parse_args()
    ckpt_path, cfg_path, notes = merge_checkpoint(args.config, args.checkpoint, args.out_dir)
    print(f'merged checkpoint: {ckpt_path}\nconfig: {cfg_path}')
    for note in notes:
        print(f'  {note}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Pretrain the demo's base ConvNeXt-V2 on the synthetic source domain (the library and what it does:
:mod:`flora_mm.weights.pretrain`; ``tools/pretrain_base.py -h``).
"""
import argparse
from pathlib import Path

from flora_mm.weights import pretrain as library
from flora_mm.weights.pretrain import pretrain


def main():
    parser = argparse.ArgumentParser(description=library.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='work_dirs/convnextv2_atto_source.pth')
    parser.add_argument('--arch', default='atto')
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--img-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--dtype', default='fp32', choices=['fp32', 'fp16'], help='storage dtype of the weights')
    args = parser.parse_args()
    pretrain(Path(args.out), args.arch, args.steps, args.batch, args.img_size, args.lr, args.seed, dtype=args.dtype)


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Per-layer cost of each adapter route, the measurement behind ``route='auto'``: the cases and timing are
:mod:`flora_mm.benchmark.layers` (``tools/benchmark_layers.py -h`` prints what is measured).

    tools/benchmark_layers.py --arch atto --method FLoRA --rank 40 --threads 1 --convs
"""
import argparse

import torch

from flora_mm.benchmark import layers
from flora_mm.benchmark.layers import ROUTES, auto_route, layer_cases, time_routes
from flora_mm.models.convnextv2 import ARCH_SETTINGS


def main():
    parser = argparse.ArgumentParser(description=layers.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='atto', choices=list(ARCH_SETTINGS))
    parser.add_argument('--img', type=int, default=128)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--method', default='FLoRA', choices=['FLoRA', 'LoRA'])
    parser.add_argument('--rank', type=int, default=40)
    parser.add_argument('--reps', type=int, default=15)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--convs', action='store_true', help='also the stem, downsampling and depthwise convs')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = dict(type=args.method, rank=args.rank)
    print(f'{args.method} r={args.rank}, ConvNeXt-V2-{args.arch}, {args.img} px, batch {args.batch}, '
          f'{args.threads} thread(s); fwd+bwd ms, median of {args.reps}\n')
    print('| layer | shape | input | ' + ' | '.join(ROUTES) + ' | fastest | auto |')
    print('|---|---|---|' + '---|' * (len(ROUTES) + 2))
    for case in layer_cases(args.arch, args.img, args.batch, args.convs):
        name, label, _, x_shape, _ = case
        med = time_routes(case, adapter, args.reps)
        fastest = min((r for r in med if r != 'frozen'), key=med.get)
        auto = auto_route(case, adapter)
        cells = ' | '.join(f'{med[r]:.2f}' if r in med else '-' for r in ROUTES)
        print(f'| {name} | {label} | {list(x_shape)} | {cells} | {fastest} | {auto} |')


if __name__ == '__main__':
    main()

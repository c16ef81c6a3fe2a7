#!/usr/bin/env python
"""Per-layer cost of each adapter route: the measurement behind ``impl='auto'`` (``AdapterLayer._prefer_branch``).

For every Linear layer shape of a ConvNeXt-V2 size (its MLPs, over the token count they see at ``--img`` and
``--batch``) and every route, times forward + backward of one adapted layer (adapter parameters trainable, base
frozen, input requiring grad), interleaved and median of ``--reps``; ``frozen`` is the same layer with no adapter
(the bound's share). Prints a markdown table and the route ``auto`` picks.

    tools/benchmark_layers.py --arch atto --method FLoRA --rank 40 --threads 1
"""
import argparse
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from flora_mm.adapters import inject_adapters  # noqa: E402
from flora_mm.models.convnextv2 import ARCH_SETTINGS  # noqa: E402

ROUTES = ('frozen', 'merged', 'two_pass', 'branch')


def layer_cases(arch: str, img: int, batch: int) -> list[tuple[str, int, int, int]]:
    """``(name, d_in, d_out, tokens)`` of the MLP Linear layers of each stage."""
    cases = []
    for stage, dim in enumerate(ARCH_SETTINGS[arch][1]):
        tokens = batch * (img // 4 // 2**stage)**2
        cases += [(f'stage{stage + 1}.pwconv1', dim, 4 * dim, tokens), (f'stage{stage + 1}.pwconv2', 4 * dim, dim,
                                                                          tokens)]
    return cases


def route_step(route: str, d_in: int, d_out: int, tokens: int, adapter: dict):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d_in, d_out))
    if route != 'frozen':
        inject_adapters(model, dict(adapter, impl=route, targets=['linear']))
        for p in model.parameters():
            if p.requires_grad:
                p.data.add_(torch.randn_like(p) * 0.01)
    else:
        model.requires_grad_(False)
    x = torch.randn(tokens, d_in, requires_grad=True)
    grad = torch.randn(tokens, d_out)

    def step():
        model(x).backward(grad)
        x.grad = None
        for p in model.parameters():
            p.grad = None

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='atto', choices=list(ARCH_SETTINGS))
    parser.add_argument('--img', type=int, default=128)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--method', default='FLoRA', choices=['FLoRA', 'LoRA'])
    parser.add_argument('--rank', type=int, default=40)
    parser.add_argument('--reps', type=int, default=15)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = dict(type=args.method, rank=args.rank)
    print(f'{args.method} r={args.rank}, ConvNeXt-V2-{args.arch}, {args.img} px, batch {args.batch}, '
          f'{args.threads} thread(s); fwd+bwd ms, median of {args.reps}\n')
    print('| layer | d_in -> d_out | tokens | ' + ' | '.join(ROUTES) + ' | fastest | auto |')
    print('|---|---|---|' + '---|' * (len(ROUTES) + 2))
    for name, d_in, d_out, tokens in layer_cases(args.arch, args.img, args.batch):
        steps = {r: route_step(r, d_in, d_out, tokens, adapter) for r in ROUTES}
        times = {r: [] for r in ROUTES}
        for rep in range(args.reps + 2):
            for route, step in steps.items():
                start = time.perf_counter()
                step()
                if rep >= 2:
                    times[route].append(1000 * (time.perf_counter() - start))
        med = {r: statistics.median(t) for r, t in times.items()}
        fastest = min(ROUTES[1:], key=med.get)
        auto = inject_adapters(nn.Linear(d_in, d_out, device='meta'), adapter).impl
        print(f'| {name} | {d_in} -> {d_out} | {tokens} | ' + ' | '.join(f'{med[r]:.2f}' for r in ROUTES) +
              f' | {fastest} | {auto} |')


if __name__ == '__main__':
    main()

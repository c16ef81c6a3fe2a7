#!/usr/bin/env python
"""Training-step time and peak memory of FLoRA against LoRA, DoRA, BitFit, full fine-tuning and the physical bound,
on a ConvNeXt-V2 or InternViT backbone; plus merged-inference overhead. The harness and what each method means:
:mod:`flora_mm.benchmark` (``tools/benchmark.py -h`` prints it)."""
import argparse
import dataclasses
import json

import torch

from flora_mm.adapters import routes
from flora_mm.benchmark import harness
from flora_mm.benchmark.harness import (CONTROLS, DTYPES, INFER, SUBSPACE, TRAIN, Settings, adapter_cfg, backbone_cfg,
                                        gemm_gflops, is_vit, run_interleaved, run_sequential)
from flora_mm.benchmark.report import compute_ratios, summary, write
from flora_mm.models.budget import match_budget


def main():
    parser = argparse.ArgumentParser(description=harness.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='atto')
    parser.add_argument('--img', default='128', help='input size: S or HxW (e.g. 800x1216)')
    parser.add_argument('--methods', nargs='+', help='time only these methods (default: all)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--rank', type=int, default=8, help='LoRA / DoRA rank')
    parser.add_argument('--kernel-rank', type=int, default=2)
    parser.add_argument('--flora-rank', type=int, help='default: matched to the LoRA budget')
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--quick', action='store_true', help='small and short (<= 90 s on 2 CPU cores)')
    parser.add_argument('--controls', action='store_true', help=f'also time the floors {CONTROLS}')
    parser.add_argument('--subspace', action='store_true', help=f'also time the subspace-tuning methods {SUBSPACE}')
    parser.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'], help='autocast dtype')
    parser.add_argument('--base-dtype', default='fp32', choices=['fp32', 'bf16', 'fp16'],
                        help='storage dtype of the frozen base parameters (other than fp32: the --amp dtype)')
    parser.add_argument('--with-cp', action='store_true', help='activation checkpointing per block, every method')
    parser.add_argument('--sequential', action=argparse.BooleanOptionalAction, default=None,
                        help='one method at a time (default: on CUDA)')
    parser.add_argument('--route-policy', choices=routes.POLICIES,
                        help="how route='auto' picks routes (default: $FLORA_MM_ROUTE_POLICY or 'cost_model', "
                        "the device's rule)")
    parser.add_argument('--route', choices=['merged', 'branch', 'two_pass'],
                        help='pin every adapted layer to this route (layers without it fail)')
    parser.add_argument('--skip-memory', action='store_true', help='time only (no peak / saved-memory runs)')
    parser.add_argument('--gemm-n', type=int, help='size of the square matmul that measures peak arithmetic speed '
                        '(default 2048 on the CPU, 8192 on a GPU; bf16 on a CPU without bf16 units is slow)')
    parser.add_argument('--json', default='work_dirs/benchmark/benchmark.json')
    parser.add_argument('--render', metavar='JSON', nargs='+',
                        help='only write the markdown table and PNG of saved reports, and print their summary')
    args = parser.parse_args()
    if args.render:
        reports = {}
        for path in args.render:
            with open(path) as f:
                reports[path] = json.load(f)
            write(reports[path], path, echo=False)
        print(summary(reports))
        return
    if args.quick:
        args.img, args.batch, args.reps, args.warmup = '64', 4, 5, 1
    if args.base_dtype not in ('fp32', args.amp):
        parser.error(f'--base-dtype {args.base_dtype} needs --amp {args.base_dtype} (the fp32 adapters meet the '
                     f'low-precision base under autocast)')
    if args.sequential is None:
        args.sequential = args.device == 'cuda'
    if args.route_policy:
        routes.set_policy(args.route_policy)
    settings = Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)
                           if getattr(args, f.name) is not None})
    if args.flora_rank is None:
        settings.flora_rank = match_budget(backbone_cfg(settings),
                                           adapter_cfg(settings, 'FLoRA', kernel_rank=settings.kernel_rank),
                                           adapter_cfg(settings, 'LoRA', rank=settings.rank))[0]

    methods = TRAIN + (tuple(m for m in CONTROLS if m != 'dw_weights' or not is_vit(args.arch))
                       if args.controls else ()) + INFER
    methods += SUBSPACE if args.subspace else ()
    if args.methods:
        known = TRAIN + CONTROLS + INFER + SUBSPACE
        unknown = sorted(set(args.methods) - set(known))
        if unknown:
            parser.error(f'unknown method(s) {unknown}; choose from {known}')
        methods = tuple(args.methods)
    run = run_sequential if args.sequential else run_interleaved
    results, diff = run(methods, settings)
    gemm = gemm_gflops(args.device, getattr(torch, DTYPES[args.amp if args.amp != 'none' else 'fp32']), args.gemm_n)
    ratios = compute_ratios(results, gemm, settings)
    setup = dict(arch=args.arch, img=args.img, batch=args.batch, device=args.device, reps=args.reps,
                 warmup=args.warmup, controls=args.controls, lora_rank=args.rank, flora_rank=settings.flora_rank,
                 amp=args.amp, base_dtype=args.base_dtype, with_cp=args.with_cp, sequential=args.sequential,
                 route_policy=routes.policy(), route=args.route or 'auto',
                 kernel_rank=args.kernel_rank, gemm_gflops=gemm,
                 torch=torch.__version__, threads=torch.get_num_threads(),
                 device_name=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu')
    report = dict(setup=setup, results=results, ratios=ratios, merged_max_abs_diff=diff)
    write(report, args.json)


if __name__ == '__main__':
    main()

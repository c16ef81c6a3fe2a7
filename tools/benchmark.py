#!/usr/bin/env python
"""Training-step time and peak memory of FLoRA against LoRA, DoRA, BitFit, full fine-tuning and the physical
bound, on a ConvNeXt-V2 backbone; plus merged-inference overhead.

Methods (training step = forward + backward of ``sum(mean(features))`` + optimizer step of the trainable
parameters):

* ``input_grad_bound`` -- every parameter frozen, the input requires grad: forward + backward of activation
  gradients through the whole backbone, which any adapter on every layer must at least pay;
* ``full``, ``bitfit``, ``lora``, ``dora``, ``flora`` -- LoRA / DoRA at ``--rank``, FLoRA at the rank whose
  budget is closest to LoRA's (both budgets are printed);
* ``infer_base`` / ``infer_flora_merged`` -- eval forward of the plain model and of the FLoRA model after
  ``merge_adapters``;
* with ``--controls``, floors for an adapter on every layer: ``lora_r1`` / ``flora_r1`` (rank 1, FLoRA with
  ``r3 = 1``: the least arithmetic such an adapter can do) and ``dw_weights`` (no adapter; only the depthwise
  convolution weights are trained: the weight gradients any method that adapts those layers must compute); and
  two variants of ``flora``: ``flora_at_lora_rank`` (LoRA's rank instead of LoRA's budget: the same Linear ranks
  as LoRA) and ``flora_cp`` (per-block activation checkpointing, ``with_cp=True``: what recomputation buys in
  memory and costs in time against the bound).

Times are medians over ``--reps`` interleaved rounds (A B C ... A B C ...) after warm-up, in one process.
Peak memory is measured per method in its own subprocess, tensor by tensor: on CPU the peak of live bytes that
the allocator handed out during three training steps (from the profiler's allocation and free events: activations,
saved tensors, gradients, optimizer state; not the model itself), on CUDA ``max_memory_allocated`` over the
built model. ``saved_mb`` is the size of the distinct tensors autograd keeps from forward to backward (model
parameters excluded): the activation memory a method cannot avoid without recomputation. The optimizer is
``AdamW(fused=True)`` for every method. ``gflop`` counts the matmul and convolution arithmetic of one step
(``FlopCounterMode``, grouped weight gradients corrected). ``flora_vs_lora_time_floor`` is ``1 +`` the time the
multiply-adds of FLoRA's budget-matched rank beyond LoRA's rank (``flora`` minus ``flora_at_lora_rank`` GFLOP) take
at the measured peak matmul speed, over LoRA's step: no kernel on these routes gets below it unless FLoRA at
LoRA's rank is faster than LoRA. ``flora_vs_bound_time_floor``: the same for all of FLoRA's arithmetic beyond
the bound's. Writes JSON (``--json``), a markdown table and a PNG bar chart next to it.
"""
import argparse
import copy
import json
import os.path as osp
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from flora_mm.adapters import count_parameters, merge_adapters  # noqa: E402
from flora_mm.models import ConvNeXtV2  # noqa: E402
from flora_mm.models.budget import solve_rank  # noqa: E402

TRAIN = ('input_grad_bound', 'full', 'bitfit', 'lora', 'dora', 'flora')
INFER = ('infer_base', 'infer_flora_merged')
FLOORS = ('lora_r1', 'flora_r1', 'dw_weights')  # compared with the bound
CONTROLS = FLOORS + ('flora_at_lora_rank', 'flora_cp')
#: Methods whose backbone parameters are frozen and whose input requires grad.
INPUT_GRAD = ('input_grad_bound', 'dw_weights')


def flora_rank_for(arch: str, target: int, kernel_rank: int) -> int:
    """The FLoRA rank whose budget on this backbone is closest to ``target``."""
    flora = dict(type='FLoRA', kernel_rank=kernel_rank)
    return solve_rank(dict(type='ConvNeXtV2', arch=arch, norm_out=False), flora, target)[0]


def build(method: str, args) -> tuple[torch.nn.Module, list]:
    torch.manual_seed(0)
    adapters = dict(bitfit=dict(type='BitFit'), lora=dict(type='LoRA', rank=args.rank),
                    dora=dict(type='DoRA', rank=args.rank),
                    flora=dict(type='FLoRA', rank=args.flora_rank, kernel_rank=args.kernel_rank, scale=4.0),
                    lora_r1=dict(type='LoRA', rank=1), flora_r1=dict(type='FLoRA', rank=1, kernel_rank=1, scale=4.0))
    adapters['flora_at_lora_rank'] = dict(adapters['flora'], rank=args.rank)
    adapters['flora_cp'] = adapters['flora']
    model = ConvNeXtV2(args.arch, adapter=adapters.get(method), norm_out=False,
                       with_cp=method == 'flora_cp').to(args.device)
    if method in INPUT_GRAD:
        model.requires_grad_(False)
    if method == 'dw_weights':
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.groups == module.in_channels > 1:
                module.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params


class Step:
    """One callable training (or inference) step of a method."""

    def __init__(self, method: str, args):
        self.method = method
        self.x = torch.randn(args.batch, 3, args.img, args.img, device=args.device)
        if method in INFER:
            model, _ = build('flora' if method == 'infer_flora_merged' else 'full', args)
            if method == 'infer_flora_merged':
                with torch.no_grad():
                    for p in model.parameters():
                        if p.requires_grad:
                            p.add_(torch.randn_like(p) * 0.02)
                model.eval()
                with torch.no_grad():
                    self.adapted_out = model(self.x)
                model = merge_adapters(copy.deepcopy(model))
            self.model = model.eval()
            self.opt = None
        else:
            self.model, params = build(method, args)
            self.model.train()
            self.opt = torch.optim.AdamW(params, lr=1e-4, fused=True) if params else None
            if method in INPUT_GRAD:
                self.x.requires_grad_(True)
        self.adapter_params = count_parameters(self.model)['adapter'] if method not in INFER else 0

    def __call__(self):
        if self.opt is None and self.method in INFER:
            with torch.no_grad():
                return self.model(self.x)
        out = sum(o.float().mean() for o in self.model(self.x))
        out.backward()
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.x.grad = None
        return out


def _conv_backward_flop(grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups,
                        output_mask, out_shape=None) -> int:
    """torch's ``convolution_backward`` formula with the weight gradient of a grouped convolution divided by the
    number of groups (torch counts it as a dense convolution: a depthwise 7x7 on C channels C times too many)."""
    from torch.utils.flop_counter import conv_backward_flop
    common = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
    grad_input = conv_backward_flop(*common, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*common, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


def flop_count(step) -> int:
    """Matmul and convolution FLOPs of one step (forward + backward; elementwise ops are not counted): the
    arithmetic a method's kernels must do, whatever their speed."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        step()
    return counter.get_total_flops()


def gemm_gflops(device: str, n: int = 2048, reps: int = 5) -> float:
    """Measured fp32 throughput of one large square matmul: the fastest this device does arithmetic."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(reps + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def peak_of(method: str, args) -> tuple[float, float]:
    """``(peak MB, saved-for-backward MB)`` of ``method``; on CPU measured in a fresh subprocess."""
    if args.device == 'cuda':
        step = Step(method, args)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20, saved_bytes(step) / 2**20
    cmd = [sys.executable, __file__, '--peak-only', method, '--arch', args.arch, '--img', str(args.img), '--batch',
           str(args.batch), '--rank', str(args.rank), '--flora-rank', str(args.flora_rank), '--kernel-rank',
           str(args.kernel_rank)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    saved, peak = out.strip().splitlines()[-2:]
    return float(peak), float(saved)


def _peak_only(method: str, args) -> None:
    from torch.profiler import ProfilerActivity, profile
    tiny = argparse.Namespace(**{**vars(args), 'batch': 1, 'img': 32})
    Step(method, tiny)()  # one-time library initialisation (oneDNN kernels, thread pools) is not the method's
    step = Step(method, args)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(3):
            step()
    print(saved_bytes(step) / 2**20)
    print(live_bytes_peak(prof.events()) / 2**20)


def saved_bytes(step) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one training step's forward, model
    parameters excluded: the activations a method must keep (e.g. the input of every layer whose parameters get a
    gradient)."""
    params = {p.untyped_storage().data_ptr() for p in step.model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    if step.method in INFER:
        return 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step.model(step.x)
    del out
    return sum(storages.values())


def live_bytes_peak(events) -> int:
    """Peak of the bytes allocated and not yet freed, from profiler events: an op's own allocations count at its
    start, ``[memory]`` events carry the frees (and allocations outside ops) at their time."""
    changes = sorted((e.time_range.start, e.cpu_memory_usage if e.name == '[memory]' else e.self_cpu_memory_usage)
                     for e in events)
    live = peak = 0
    for _, delta in changes:
        live += delta
        peak = max(peak, live)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='atto')
    parser.add_argument('--img', type=int, default=128)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--rank', type=int, default=8, help='LoRA / DoRA rank')
    parser.add_argument('--kernel-rank', type=int, default=2)
    parser.add_argument('--flora-rank', type=int, help='default: matched to the LoRA budget')
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--quick', action='store_true', help='small and short (<= 90 s on 2 CPU cores)')
    parser.add_argument('--controls', action='store_true', help=f'also time the floors {CONTROLS}')
    parser.add_argument('--json', default='work_dirs/benchmark/benchmark.json')
    parser.add_argument('--peak-only', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.img, args.batch, args.reps, args.warmup = 64, 4, 5, 1
    if args.flora_rank is None:
        with torch.device('meta'):
            lora = count_parameters(ConvNeXtV2(args.arch, adapter=dict(type='LoRA', rank=args.rank)))['adapter']
        args.flora_rank = flora_rank_for(args.arch, lora, args.kernel_rank)
    if args.peak_only:
        _peak_only(args.peak_only, args)
        return

    torch.manual_seed(0)
    steps = {m: Step(m, args) for m in TRAIN + (CONTROLS if args.controls else ()) + INFER}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {m: [] for m in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            sync(args.device)
            start = time.perf_counter()
            step()
            sync(args.device)
            times[name].append(1000 * (time.perf_counter() - start))
    gemm = gemm_gflops(args.device)
    results = {}
    for m, step in steps.items():
        peak, saved = peak_of(m, args)
        results[m] = dict(step_ms=statistics.median(times[m]), peak_mb=peak, saved_mb=saved,
                          adapter_params=step.adapter_params, gflop=flop_count(step) / 1e9)
    merged = steps['infer_flora_merged']
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(merged.adapted_out, merged()))
    r = {m: results[m] for m in results}
    ratios = dict(
        flora_vs_lora_time=r['flora']['step_ms'] / r['lora']['step_ms'],
        flora_vs_lora_mem=r['flora']['peak_mb'] / max(r['lora']['peak_mb'], 1e-9),
        flora_vs_bound_time=r['flora']['step_ms'] / r['input_grad_bound']['step_ms'],
        flora_vs_bound_mem=r['flora']['peak_mb'] / max(r['input_grad_bound']['peak_mb'], 1e-9),
        dora_vs_lora_time=r['dora']['step_ms'] / r['lora']['step_ms'],
        full_vs_bound_time=r['full']['step_ms'] / r['input_grad_bound']['step_ms'],
        merged_vs_base_infer_time=r['infer_flora_merged']['step_ms'] / r['infer_base']['step_ms'],
        **{f'{m}_vs_bound_time': r[m]['step_ms'] / r['input_grad_bound']['step_ms'] for m in FLOORS if m in r})
    ratios['flora_vs_lora_flop'] = r['flora']['gflop'] / r['lora']['gflop']
    ratios['flora_vs_bound_flop'] = r['flora']['gflop'] / r['input_grad_bound']['gflop']
    # Floors from arithmetic at the device's peak matmul speed. LoRA's budget buys FLoRA a higher rank than LoRA's;
    # the multiply-adds that rank adds (FLoRA minus FLoRA at LoRA's rank) cost at least this much time on these
    # routes, however fast their kernels -- the least flora_vs_lora_time reachable unless FLoRA at LoRA's rank
    # beats LoRA. Against the bound: every FLoRA multiply-add beyond the bound's.
    def floor(extra_gflop: float, over: str) -> float:
        return 1 + extra_gflop / gemm * 1000 / r[over]['step_ms']

    at_lora_rank = (r['flora_at_lora_rank']['gflop'] if 'flora_at_lora_rank' in r else
                    flop_count(Step('flora_at_lora_rank', args)) / 1e9)
    ratios['flora_vs_lora_time_floor'] = floor(r['flora']['gflop'] - at_lora_rank, 'lora')
    ratios['flora_vs_bound_time_floor'] = floor(r['flora']['gflop'] - r['input_grad_bound']['gflop'],
                                                'input_grad_bound')
    if 'flora_at_lora_rank' in r:
        ratios['flora_at_lora_rank_vs_lora_time'] = r['flora_at_lora_rank']['step_ms'] / r['lora']['step_ms']
    if 'flora_cp' in r:
        ratios['flora_cp_vs_bound_time'] = r['flora_cp']['step_ms'] / r['input_grad_bound']['step_ms']
        ratios['flora_cp_vs_bound_mem'] = r['flora_cp']['peak_mb'] / max(r['input_grad_bound']['peak_mb'], 1e-9)
    setup = dict(arch=args.arch, img=args.img, batch=args.batch, device=args.device, reps=args.reps,
                 warmup=args.warmup, controls=args.controls, lora_rank=args.rank, flora_rank=args.flora_rank,
                 kernel_rank=args.kernel_rank, gemm_gflops=gemm,
                 torch=torch.__version__, threads=torch.get_num_threads(),
                 device_name=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu')
    report = dict(setup=setup, results=results, ratios=ratios, merged_max_abs_diff=diff)
    write(report, args.json)


def write(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    base = osp.splitext(path)[0]
    import os
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
    s = report['setup']
    lines = [f"ConvNeXt-V2-{s['arch']}, {s['img']} px, batch {s['batch']}, {s['device_name']} "
             f"({s['threads']} threads), medians of {s['reps']} interleaved reps; LoRA/DoRA r={s['lora_rank']}, "
             f"FLoRA r={s['flora_rank']} r3={s['kernel_rank']}; peak fp32 matmul {s['gemm_gflops']:.0f} GFLOP/s", '',
             '| method | step (ms) | peak (MB) | saved for backward (MB) | GFLOP | adapter params |',
             '|---|---|---|---|---|---|']
    for m, v in report['results'].items():
        lines.append(f"| {m} | {v['step_ms']:.1f} | {v['peak_mb']:.1f} | {v['saved_mb']:.1f} | {v['gflop']:.2f} | "
                     f"{v['adapter_params']:,} |")
    lines += ['', '| ratio | value |', '|---|---|']
    lines += [f'| {k} | {v:.3f} |' for k, v in report['ratios'].items()]
    lines.append(f"| merged_max_abs_diff | {report['merged_max_abs_diff']:.2e} |")
    with open(base + '.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    names = list(report['results'])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], 'step_ms', 'step time (ms)'), (axes[1], 'peak_mb', 'peak memory (MB)')):
        ax.barh(names, [report['results'][n][key] for n in names], color='tab:blue')
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.suptitle(lines[0], fontsize=8)
    fig.tight_layout()
    fig.savefig(base + '.png', dpi=110)
    print('\n'.join(lines))
    print(f'\nwrote {path}, {base}.md, {base}.png')


if __name__ == '__main__':
    main()

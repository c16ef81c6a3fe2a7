"""The benchmark harness (``tools/benchmark.py`` is its command line): training-step time and peak memory of FLoRA
against LoRA, DoRA, BitFit, full fine-tuning and the physical bound, on a ConvNeXt-V2 backbone; plus merged-inference
overhead.

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

Backbones (``--arch``): ConvNeXt-V2 (``atto`` ... ``huge``; adapters on every Linear and Conv) or InternViT
(``internvit-6b``, ``internvit-300m``, and ``internvit-tiny`` for tests; adapters on every Linear, as the paper).
GPU runs: ``--amp bf16|fp16`` (autocast; the trainable parameters stay fp32, fp16 with a ``GradScaler``),
``--base-dtype bf16`` (frozen base parameters stored in bf16, as InternViT-6B training does; needs ``--amp``),
``--with-cp`` (per-block activation checkpointing for every method). ``--sequential`` builds, times and frees one
method at a time (the default on CUDA, where several large models do not fit at once); on CUDA peak memory is
then ``max_memory_allocated`` during the timed steps, above the built model and optimizer state. ``routes`` in
the results counts the routes ``route='auto'`` chose on this device.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import time
from collections import Counter

import torch

from flora_mm.adapters import adapted_layers, count_parameters, merge_adapters, mpc_layers, mpc_loss
from flora_mm.models import ConvNeXtV2, InternViT

__all__ = ['CONTROLS', 'DTYPES', 'FLOORS', 'INFER', 'INPUT_GRAD', 'SUBSPACE', 'TRAIN', 'Settings', 'Step',
           'adapter_cfg', 'backbone_cfg', 'build', 'cuda_peak', 'flop_count', 'gemm_gflops', 'image_hw', 'is_vit',
           'live_bytes_peak', 'peaks_here', 'peaks_of', 'run_interleaved', 'run_sequential', 'saved_bytes']


@dataclasses.dataclass
class Settings:
    """What one benchmark run measures (``tools/benchmark.py``'s options of the same names).

    Args:
        arch: ConvNeXt-V2 size (``atto`` ... ``huge``) or an InternViT name (:data:`INTERNVIT`).
        img: Input size, ``S`` or ``HxW``.
        batch: Batch size.
        device: ``cpu`` or ``cuda``.
        rank: LoRA / DoRA rank.
        flora_rank: FLoRA's rank (``tools/benchmark.py`` matches it to LoRA's budget by default).
        kernel_rank: FLoRA's kernel-mode rank ``r3``.
        reps: Timed rounds (medians are reported).
        warmup: Untimed steps before timing.
        amp: Autocast dtype, ``none`` / ``bf16`` / ``fp16``.
        base_dtype: Storage dtype of the frozen base parameters.
        with_cp: Per-block activation checkpointing for every method.
        route: Pin every adapted layer to this route (``None``: ``auto``).
        route_policy: How ``route='auto'`` picks routes in the peak-memory subprocess (``None``: its default).
        skip_memory: Time only (no peak / saved-memory measurement).
    """
    arch: str = 'atto'
    img: str = '128'
    batch: int = 8
    device: str = 'cpu'
    rank: int = 8
    flora_rank: int = 8
    kernel_rank: int = 2
    reps: int = 7
    warmup: int = 2
    amp: str = 'none'
    base_dtype: str = 'fp32'
    with_cp: bool = False
    route: str | None = None
    route_policy: str | None = None
    skip_memory: bool = False


TRAIN = ('input_grad_bound', 'full', 'bitfit', 'lora', 'dora', 'flora')
INFER = ('infer_base', 'infer_flora_merged')
#: The subspace-tuning paper's methods (``--subspace`` or ``--methods``): TriLoRA at LoRA's rank, the scaling methods,
#: LoRA with the MPC_o regulariser (its loss term timed with the step) and with MPC_n.
SUBSPACE = ('trilora', 'ia3', 'ssl', 'ssb', 'lora_mpc_o', 'lora_mpc_n')
FLOORS = ('lora_r1', 'flora_r1', 'dw_weights')  # compared with the bound
CONTROLS = FLOORS + ('flora_at_lora_rank', 'flora_cp')
#: Methods whose backbone parameters are frozen and whose input requires grad.
INPUT_GRAD = ('input_grad_bound', 'dw_weights')


DTYPES = dict(fp32='float32', bf16='bfloat16', fp16='float16')
#: InternViT sizes by ``--arch`` name (``internvit-tiny``: for tests).
INTERNVIT = {'internvit-6b': '6b', 'internvit-300m': '300m',
             'internvit-tiny': dict(embed_dim=64, depth=4, num_heads=4, mlp_dim=128, out_indices=(0, 1, 2, 3))}


def image_hw(img) -> tuple[int, int]:
    """``--img``: ``S`` (square) or ``HxW``."""
    h, _, w = str(img).partition('x')
    return int(h), int(w or h)


def is_vit(arch: str) -> bool:
    return arch in INTERNVIT


def backbone_cfg(args, with_cp: bool = False) -> dict:
    """The benchmarked backbone's config (no adapter)."""
    if is_vit(args.arch):
        return dict(type='InternViT', arch=INTERNVIT[args.arch], img_size=max(image_hw(args.img)), with_fpn=False,
                    with_cp=with_cp or args.with_cp)
    return dict(type='ConvNeXtV2', arch=args.arch, norm_out=False, with_cp=with_cp or args.with_cp)


def adapter_cfg(args, method_type: str, **kw) -> dict:
    """An adapter of the paper's form for this backbone: ViT -- Linear layers only, FLoRA s = 0.04 (InternViT-6B);
    ConvNeXt -- Linear and Conv layers, FLoRA s = 4."""
    cfg = dict(type=method_type, **kw)
    if args.route and method_type != 'BitFit':
        cfg['route'] = args.route
    if is_vit(args.arch):
        cfg['targets'] = ['linear']
    if method_type == 'FLoRA':
        cfg.setdefault('scale', 0.04 if is_vit(args.arch) else 4.0)
        if is_vit(args.arch):
            cfg.pop('kernel_rank', None)
    return cfg


def adapters_of(args) -> dict:
    adapters = dict(bitfit=dict(type='BitFit'), lora=adapter_cfg(args, 'LoRA', rank=args.rank),
                    dora=adapter_cfg(args, 'DoRA', rank=args.rank),
                    flora=adapter_cfg(args, 'FLoRA', rank=args.flora_rank, kernel_rank=args.kernel_rank),
                    lora_r1=adapter_cfg(args, 'LoRA', rank=1),
                    flora_r1=adapter_cfg(args, 'FLoRA', rank=1, kernel_rank=1))
    adapters['flora_at_lora_rank'] = dict(adapters['flora'], rank=args.rank)
    adapters['flora_cp'] = adapters['flora']
    adapters.update(trilora=adapter_cfg(args, 'TriLoRA', rank=args.rank), ia3=adapter_cfg(args, 'IA3'),
                    ssl=adapter_cfg(args, 'SSL'), ssb=adapter_cfg(args, 'SSB'),
                    lora_mpc_o=dict(adapters['lora'], mpc='orthogonal'),
                    # MPC_n needs a factorised branch: LoRA's linear layers only (loralib's conv form has none)
                    lora_mpc_n=dict(adapters['lora'], mpc='nonlinear', targets=['linear']))
    return adapters


def build(method: str, args, base_dtype: str | None = None) -> tuple[torch.nn.Module, list]:
    """The backbone for ``method``: adapters injected, frozen parameters stored in ``base_dtype`` (default
    ``--base-dtype``), and the parameters the optimizer trains."""
    torch.manual_seed(0)
    base_dtype = base_dtype or args.base_dtype
    cfg = backbone_cfg(args, with_cp=method == 'flora_cp')
    cls = InternViT if cfg.pop('type') == 'InternViT' else ConvNeXtV2
    with torch.device(args.device):  # built (and initialised) where it runs: a 6B model is not built on the CPU
        model = cls(adapter=adapters_of(args).get(method), **cfg)
    if method in INPUT_GRAD:
        model.requires_grad_(False)
    if method == 'dw_weights':
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.groups == module.in_channels > 1:
                module.weight.requires_grad_(True)
    if base_dtype != 'fp32':
        dtype = getattr(torch, DTYPES[base_dtype])
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params


class Step:
    """One callable training (or inference) step of a method."""

    def __init__(self, method: str, args):
        self.method = method
        self.device = args.device
        self.amp = None if args.amp == 'none' else getattr(torch, DTYPES[args.amp])
        self.x = torch.randn(args.batch, 3, *image_hw(args.img), device=args.device)
        if method in INFER:
            # inference keeps fp32 weights (merged or not), under the same autocast as training
            model, _ = build('flora' if method == 'infer_flora_merged' else 'full', args, base_dtype='fp32')
            self.model = model.eval()
            if method == 'infer_flora_merged':
                with torch.no_grad():
                    for p in model.parameters():
                        if p.requires_grad:
                            p.add_(torch.randn_like(p) * 0.02)
                    self.adapted_out = self.forward()
                self.model = merge_adapters(copy.deepcopy(model)).eval()
            self.opt = None
        else:
            self.model, params = build(method, args)
            self.model.train()
            self.opt = torch.optim.AdamW(params, lr=1e-4, fused=True) if params else None
            if method in INPUT_GRAD:
                self.x.requires_grad_(True)
        self.scaler = torch.amp.GradScaler(args.device) if self.amp == torch.float16 and self.opt else None
        self.adapter_params = count_parameters(self.model)['adapter'] if method not in INFER else 0
        # the layers with an MPC regulariser, found once: the timed step adds their term, as the mm integration does
        self.mpc_layers = mpc_layers(self.model) if self.opt is not None else []

    def forward(self):
        with torch.autocast(self.device, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            return self.model(self.x)

    def __call__(self):
        if self.opt is None and self.method in INFER:
            with torch.no_grad():
                return self.forward()
        out = sum(o.float().mean() for o in self.forward())
        if self.mpc_layers:
            out = out + mpc_loss(self.model, self.mpc_layers)
        if self.scaler is not None:
            self.scaler.scale(out).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
        else:
            out.backward()
            if self.opt is not None:
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
        self.x.grad = None
        return out

    def routes(self) -> dict[str, int]:
        """How many adapted layers take each route (after the first training step: ``auto``'s choice)."""
        return dict(Counter(layer.route for _, layer in adapted_layers(self.model)))


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


def gemm_gflops(device: str, dtype: torch.dtype = torch.float32, n: int | None = None, reps: int = 5) -> float:
    """Measured throughput of one large square matmul in ``dtype``: the fastest this device does arithmetic
    (``n`` defaults to 2048 on the CPU, 8192 on a GPU, where a smaller product does not fill the device)."""
    n = n or (2048 if device == 'cpu' else 8192)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
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


def cuda_peak(step) -> float:
    """MB allocated at peak during two steps, above what was allocated before them (model, optimizer state)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def peaks_of(methods, args) -> dict[str, tuple[float, float]]:
    """``{method: (peak MB, saved-for-backward MB)}``; on CPU measured in one fresh subprocess (the methods one after
    the other, each profiled from a clean slate), which pays the interpreter and library start-up once."""
    if args.device == 'cuda':
        out = {}
        for method in methods:
            step = Step(method, args)
            step()
            out[method] = (cuda_peak(step), saved_bytes(step) / 2**20)
        return out
    cmd = [sys.executable, '-m', 'flora_mm.benchmark', json.dumps(dataclasses.asdict(args)), *methods]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {m: tuple(v) for m, v in json.loads(out.strip().splitlines()[-1]).items()}


def peak_of(method: str, args) -> tuple[float, float]:
    """``(peak MB, saved-for-backward MB)`` of ``method`` (see :func:`peaks_of`)."""
    return peaks_of([method], args)[method]


def peaks_here(methods, args) -> dict[str, tuple[float, float]]:
    """``{method: (peak MB, saved MB)}`` on the CPU, profiled in this process (``python -m flora_mm.benchmark``,
    which :func:`peaks_of` starts fresh)."""
    from torch.profiler import ProfilerActivity, profile
    tiny = dataclasses.replace(args, batch=1, img='32')
    out = {}
    for method in methods:
        Step(method, tiny)()  # one-time library initialisation (oneDNN kernels, thread pools) is not the method's
        gc.collect()
        step = Step(method, args)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(3):
                step()
        out[method] = (live_bytes_peak(prof.events()) / 2**20, saved_bytes(step) / 2**20)
        del step, prof
        gc.collect()
    return out


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
        out = step.forward()
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


def _result(step, times: list[float], peak: float, saved: float) -> dict:
    return dict(step_ms=statistics.median(times), peak_mb=peak, saved_mb=saved, adapter_params=step.adapter_params,
                gflop=flop_count(step) / 1e9, routes=step.routes())


def _merged_diff(step) -> float:
    with torch.no_grad():
        return max((a - b).abs().max().item() for a, b in zip(step.adapted_out, step()))


def _timed(step, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return 1000 * (time.perf_counter() - start)


def run_interleaved(methods, args) -> tuple[dict, float]:
    """All methods built at once and timed in interleaved rounds (fair on a CPU whose speed drifts)."""
    torch.manual_seed(0)
    steps = {m: Step(m, args) for m in methods}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {m: [] for m in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(_timed(step, args.device))
    nan = (float('nan'), float('nan'))
    peaks = {m: nan for m in steps} if args.skip_memory else peaks_of(list(steps), args)
    results = {m: _result(step, times[m], *peaks[m]) for m, step in steps.items()}
    return results, _merged_diff(steps['infer_flora_merged']) if 'infer_flora_merged' in steps else float('nan')


def run_sequential(methods, args) -> tuple[dict, float]:
    """One method at a time: built, warmed up, timed, measured, freed (large models on one GPU)."""
    results, diff = {}, float('nan')
    for m in methods:
        torch.manual_seed(0)
        step = Step(m, args)
        for _ in range(args.warmup):
            step()
        times = [_timed(step, args.device) for _ in range(args.reps)]
        if args.skip_memory:
            peak, saved = float('nan'), float('nan')
        elif args.device == 'cuda':
            peak, saved = cuda_peak(step), saved_bytes(step) / 2**20
        else:
            peak, saved = peak_of(m, args)
        results[m] = _result(step, times, peak, saved)
        if m == 'infer_flora_merged':
            diff = _merged_diff(step)
        print(f'{m}: {results[m]["step_ms"]:.1f} ms, peak {peak:.0f} MB, routes {results[m]["routes"]}',
              flush=True)
        del step
        gc.collect()
        if args.device == 'cuda':
            torch.cuda.empty_cache()
    return results, diff

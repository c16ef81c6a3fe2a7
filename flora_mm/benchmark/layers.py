"""Per-layer cost of each adapter route (``tools/benchmark_layers.py`` is its command line): the measurements the
CPU rule of ``route='auto'`` was fitted on (``AdapterLayer.rule_route``).

For every adapted layer shape of a ConvNeXt-V2 size -- the MLP Linear layers, and with ``--convs`` the stem, the
downsampling and the depthwise convolutions, each on the input it sees at ``--img`` and ``--batch`` -- and every
route, times forward + backward of one adapted layer (adapter parameters trainable, base frozen, input requiring
grad, in the memory format the backbone gives it: channels-last after the stem, as timm's blocks permute to NHWC and
back), interleaved and median of ``--reps``; ``frozen`` is the same layer with no adapter (the bound's share), ``-``
a route the layer does not have. Prints a markdown table and the route ``auto`` picks.

    tools/benchmark_layers.py --arch atto --method FLoRA --rank 40 --threads 1 --convs
"""
from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import torch
from torch import nn

from flora_mm.adapters import inject_adapters
from flora_mm.models.convnextv2 import ARCH_SETTINGS

__all__ = ['ROUTES', 'TARGETS', 'Case', 'auto_route', 'layer_cases', 'route_step', 'time_routes']

ROUTES = ('frozen', 'merged', 'two_pass', 'branch')
TARGETS = ('linear', 'conv')
#: ``(name, shape label, layer factory, input shape, input memory format)``
Case = tuple[str, str, Callable[[], nn.Module], tuple, torch.memory_format]


def layer_cases(arch: str, img: int, batch: int, convs: bool = False) -> list[Case]:
    """The cases of the MLP Linear layers of each stage, and with
    ``convs`` of the stem, downsampling and depthwise convolutions."""
    dims = ARCH_SETTINGS[arch][1]
    cases = []
    for stage, dim in enumerate(dims):
        res = img // 4 // 2**stage
        if convs:
            c_in, k = (3, 4) if stage == 0 else (dims[stage - 1], 2)
            layout = torch.contiguous_format if stage == 0 else torch.channels_last  # the stem sees the image
            name = f'stage{stage + 1}.{"stem" if stage == 0 else "downsample"}'
            cases.append((name, f'{c_in} -> {dim} k{k}s{k}', functools.partial(nn.Conv2d, c_in, dim, k, stride=k),
                          (batch, c_in, res * k, res * k), layout))
            cases.append((f'stage{stage + 1}.conv_dw', f'{dim} dw k7', functools.partial(
                nn.Conv2d, dim, dim, 7, padding=3, groups=dim), (batch, dim, res, res), torch.channels_last))
        tokens = batch * res**2
        cases += [(f'stage{stage + 1}.pwconv{i + 1}', f'{a} -> {b}', functools.partial(nn.Linear, a, b), (tokens, a),
                   torch.contiguous_format) for i, (a, b) in enumerate(((dim, 4 * dim), (4 * dim, dim)))]
    return cases


def route_step(route: str, make, x_shape: tuple, adapter: dict,
               memory_format: torch.memory_format = torch.contiguous_format):
    """A closure running forward + backward of the layer on ``route`` (``None`` if the layer has no such route)."""
    torch.manual_seed(0)
    model = nn.Sequential(make())
    if route != 'frozen':
        try:
            inject_adapters(model, dict(adapter, route=route, targets=list(TARGETS)))
        except ValueError:
            if route == 'branch':  # no branch form, e.g. a depthwise convolution
                return None
            raise
        for p in model.parameters():
            if p.requires_grad:
                p.data.add_(torch.randn_like(p) * 0.01)
    else:
        model.requires_grad_(False)
    x = torch.randn(*x_shape).contiguous(memory_format=memory_format).requires_grad_()
    grad = torch.randn_like(model(x))  # in the output's memory format, as autograd would pass it

    def step():
        model(x).backward(grad)
        x.grad = None
        for p in model.parameters():
            p.grad = None

    return step


def time_routes(case: Case, adapter: dict, reps: int, warmup: int = 2) -> dict[str, float]:
    """Median forward + backward milliseconds of each route the case's layer has (``frozen``: no adapter), the
    routes interleaved round by round after ``warmup`` untimed rounds."""
    _, _, make, x_shape, memory_format = case
    steps = {r: route_step(r, make, x_shape, adapter, memory_format) for r in ROUTES}
    steps = {r: step for r, step in steps.items() if step is not None}
    times = {r: [] for r in steps}
    for rep in range(reps + warmup):
        for route, step in steps.items():
            start = time.perf_counter()
            step()
            if rep >= warmup:
                times[route].append(1000 * (time.perf_counter() - start))
    return {r: statistics.median(t) for r, t in times.items()}


def auto_route(case: Case, adapter: dict, device_type: str = 'cpu') -> str:
    """The route the default policy (``cost_model``) gives the case's layer at its first training forward on
    ``device_type``: that device type's rule (``AdapterLayer.rule_route``)."""
    with torch.device('meta'):
        return inject_adapters(case[2](), dict(adapter, targets=list(TARGETS))).rule_route(device_type)

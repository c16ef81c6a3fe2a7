"""flora_mm.benchmark.layers (tools/benchmark_layers.py): its cases are the backbone's adapted layers, and every
route runs on each."""
import torch
from torch import nn

from flora_mm.benchmark import layers as benchmark_layers


def _model_layer_inputs(arch: str, img: int, batch: int) -> set:
    """``(weight shape, input shape as the layer sees it flattened to 2-D for Linear, channels-last?)`` of every
    Conv2d / Linear of the real backbone in a training forward."""
    from flora_mm.models import ConvNeXtV2
    model = ConvNeXtV2(arch, norm_out=False)
    seen = set()

    def record(module, inputs):
        x = inputs[0]
        shape = (x.shape[:-1].numel(), x.shape[-1]) if isinstance(module, nn.Linear) else tuple(x.shape)
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        seen.add((tuple(module.weight.shape), shape, channels_last))

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_pre_hook(record)
    model(torch.randn(batch, 3, img, img))
    return seen


def test_cases_are_the_backbone_layers_with_their_inputs():
    """Same weight shapes, input shapes and memory formats (channels-last after the stem) as in the backbone."""
    cases = benchmark_layers.layer_cases('atto', 64, 2, convs=True)
    assert len(benchmark_layers.layer_cases('atto', 64, 2)) == 8  # two MLP Linear layers per stage
    described = set()
    for _, _, make, x_shape, memory_format in cases:
        with torch.device('meta'):
            weight = make().weight
        described.add((tuple(weight.shape), tuple(x_shape), memory_format == torch.channels_last))
    assert described == _model_layer_inputs('atto', 64, 2)


def test_every_route_runs_on_every_case():
    adapter = dict(type='FLoRA', rank=4)
    for name, _, make, x_shape, memory_format in benchmark_layers.layer_cases('atto', 64, 2, convs=True):
        steps = {route: benchmark_layers.route_step(route, make, x_shape, adapter, memory_format)
                 for route in benchmark_layers.ROUTES}
        # only a depthwise convolution lacks the factorised branch
        assert (steps['branch'] is None) == name.endswith('conv_dw'), name
        for step in steps.values():
            if step is not None:
                step()


def test_time_routes_reports_the_routes_a_layer_has():
    """A depthwise convolution has no branch route: its table row has every other route, each timed (> 0 ms)."""
    cases = {c[0]: c for c in benchmark_layers.layer_cases('atto', 32, 1, convs=True)}
    times = benchmark_layers.time_routes(cases['stage1.conv_dw'], dict(type='FLoRA', rank=2), reps=1, warmup=0)
    assert set(times) == {'frozen', 'merged', 'two_pass'} and min(times.values()) > 0
    # atto's stage-1 MLP (40 -> 160) is narrow: the CPU rule merges it; on CUDA everything mergeable is merged
    assert benchmark_layers.auto_route(cases['stage1.pwconv1'], dict(type='FLoRA', rank=2)) == 'merged'
    assert benchmark_layers.auto_route(cases['stage4.pwconv1'], dict(type='FLoRA', rank=2)) == 'branch'
    assert benchmark_layers.auto_route(cases['stage4.pwconv1'], dict(type='FLoRA', rank=2), 'cuda') == 'merged'

"""tools/benchmark_layers.py: its cases are the backbone's adapted layers, and every route runs on each."""
from tests.test_tools import load_tool


def test_cases_cover_every_adapted_layer_and_routes_run():
    benchmark_layers = load_tool('benchmark_layers')
    cases = benchmark_layers.layer_cases('atto', 64, 2, convs=True)
    assert len(benchmark_layers.layer_cases('atto', 64, 2)) == 8  # two MLP Linear layers per stage
    assert len(cases) == 16  # + stem / downsampling and depthwise convolution per stage
    adapter = dict(type='FLoRA', rank=4)
    for name, _, make, x_shape in cases:
        steps = {route: benchmark_layers.route_step(route, make, x_shape, adapter) for route in
                 benchmark_layers.ROUTES}
        # only a depthwise convolution lacks the factorised branch
        assert (steps['branch'] is None) == name.endswith('conv_dw'), name
        for step in steps.values():
            if step is not None:
                step()

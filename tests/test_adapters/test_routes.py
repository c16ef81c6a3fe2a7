"""``route='auto'``: routes chosen at the first training forward -- by the device type's rule (the default), or measured
on the device (opt-in), cached per signature."""
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from flora_mm.adapters import adapter_parameters, inject_adapters, routes
from tests.test_adapters.cases import perturb_adapters


@pytest.fixture(autouse=True)
def fresh_routes(monkeypatch):
    monkeypatch.delenv('FLORA_MM_ROUTE_POLICY', raising=False)
    monkeypatch.delenv('FLORA_MM_ROUTE_CACHE', raising=False)
    routes.clear_cache()
    yield
    routes.set_policy(None)
    routes.clear_cache()


@pytest.fixture
def measuring(monkeypatch):
    """The opt-in policy that times the routes."""
    monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'measure')


def fake_timer(monkeypatch, times):
    """Replace the timing by fixed seconds per route (policy ``measure``); returns the list of measured candidate
    tuples."""
    monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'measure')
    calls = []

    def measure(candidates, make_step, device_type, reps=None):
        calls.append(candidates)
        for route in candidates:
            make_step(route)()  # the real step must run without error
        return {r: times[r] for r in candidates}
    monkeypatch.setattr(routes, 'measure', measure)
    return calls


def adapted(seed=0, **cfg):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 48), nn.GELU(), nn.Linear(48, 48))
    inject_adapters(model, dict(type='FLoRA', rank=4, **cfg))
    perturb_adapters(model)
    return model


@pytest.mark.parametrize('times, expected', [
    (dict(merged=3.0, branch=1.0, two_pass=2.0), 'branch'),
    (dict(merged=1.0, branch=3.0, two_pass=2.0), 'merged'),
    (dict(merged=3.0, branch=2.0, two_pass=1.0), 'two_pass'),
])
def test_fastest_measured_route_is_taken_once_per_signature(monkeypatch, times, expected):
    calls = fake_timer(monkeypatch, times)
    model = adapted()
    assert all(model[i].route == 'auto' for i in (0, 2, 4))
    model(torch.randn(5, 16)).sum().backward()
    assert [model[i].route for i in (0, 2, 4)] == [expected] * 3
    # layers 2 and 4 share a signature (same shapes, input, dtype, device): measured once
    assert calls == [('merged', 'branch', 'two_pass')] * 2
    model(torch.randn(5, 16))
    assert len(calls) == 2


def test_signature_includes_dtype_autocast_and_shape():
    layer = adapted()[2]
    x = torch.randn(5, 48)
    keys = {layer.route_key(x), layer.route_key(x.double()), layer.route_key(torch.randn(7, 48))}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        keys.add(layer.route_key(x))
    assert len(keys) == 4


def test_eval_and_pinned_layers_never_measure(monkeypatch):
    calls = fake_timer(monkeypatch, dict(merged=1.0, branch=1.0, two_pass=1.0))
    model = adapted().eval()
    with torch.no_grad():
        model(torch.randn(5, 16))
    assert model[0].route == 'auto' and not calls
    pinned = adapted(route='two_pass')
    pinned(torch.randn(5, 16)).sum().backward()
    assert not calls and pinned[0].route == 'two_pass'


def test_the_default_policy_is_the_device_rule_at_the_first_training_step(monkeypatch):
    """No policy set: nothing is timed, the routes stay ``auto`` until the first training forward and are then the
    rule of the device type the layer runs on (here the CPU's); eval forwards decide nothing."""
    calls = fake_timer(monkeypatch, dict(merged=3.0, branch=2.0, two_pass=1.0))
    monkeypatch.delenv('FLORA_MM_ROUTE_POLICY')
    assert routes.policy() == 'cost_model'
    model = adapted()
    assert [layer.route for layer in model[0::2]] == ['auto'] * 3
    model.eval()
    with torch.no_grad():
        model(torch.randn(5, 16))
    assert [layer.route for layer in model[0::2]] == ['auto'] * 3
    model.train()
    model(torch.randn(5, 16)).sum().backward()
    assert not calls
    assert [layer.route for layer in model[0::2]] == [layer.rule_route('cpu') for layer in model[0::2]]


def test_an_unknown_policy_fails_when_the_model_is_built(monkeypatch):
    monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'fastest')
    with pytest.raises(ValueError, match="unknown route policy 'fastest'"):
        adapted()


@pytest.mark.parametrize('deterministic', [False, True])
def test_torch_deterministic_mode_does_not_change_the_policy(monkeypatch, deterministic):
    """The rule is the default whether or not torch's deterministic algorithms are on (mmengine's
    ``randomness=dict(deterministic=True)``); measuring is opt-in in both."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        assert routes.policy() == 'cost_model'
        monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'measure')
        assert routes.policy() == 'measure'
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize('dropout', [0.0, 0.3])
def test_measuring_leaves_grads_and_random_streams_untouched(dropout, measuring):
    """The first (measuring) step equals a step of a twin pinned to the chosen routes: same dropout masks, same
    gradients, so the timing runs neither drew random numbers nor accumulated into ``.grad``."""
    auto, x = adapted(dropout=dropout), torch.randn(5, 16)
    torch.manual_seed(7)
    out = auto(x)
    out.square().sum().backward()
    pinned = adapted(dropout=dropout)
    for i in (0, 2, 4):
        pinned[i].route = auto[i].route
    torch.manual_seed(7)
    ref = pinned(x)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    grads, ref_grads = adapter_parameters(auto), adapter_parameters(pinned)
    for name, p in grads.items():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, msg=name)


@pytest.mark.parametrize('use_reentrant', [False, True])
def test_first_step_inside_activation_checkpointing(use_reentrant, measuring):
    model, x = adapted(), torch.randn(5, 16, requires_grad=True)
    out = checkpoint(model, x, use_reentrant=use_reentrant)
    out.square().sum().backward()
    pinned = adapted()
    for i in (0, 2, 4):
        pinned[i].route = model[i].route
    xr = x.detach().clone().requires_grad_()
    pinned(xr).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    ref_grads = adapter_parameters(pinned)
    for name, p in adapter_parameters(model).items():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, msg=name)


def test_disk_cache_gives_the_same_routes_without_measuring(monkeypatch, tmp_path):
    monkeypatch.setenv('FLORA_MM_ROUTE_CACHE', str(tmp_path))
    monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'measure')
    fake_timer(monkeypatch, dict(merged=2.0, branch=3.0, two_pass=1.0))
    adapted()(torch.randn(5, 16)).sum().backward()
    files = list(tmp_path.glob('routes_*.json'))
    assert len(files) == 1 and torch.__version__.split('+')[0] in files[0].name
    routes.clear_cache()  # a new process: only the disk remembers
    calls = fake_timer(monkeypatch, dict(merged=1.0, branch=1.0, two_pass=1.0))
    model = adapted()
    model(torch.randn(5, 16)).sum().backward()
    assert not calls and model[0].route == 'two_pass'


def test_set_policy_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv('FLORA_MM_ROUTE_POLICY', 'measure')
    routes.set_policy('cost_model')
    assert routes.policy() == 'cost_model'
    routes.set_policy(None)
    assert routes.policy() == 'measure'


def small(dropout):
    """A narrow Linear layer: the cost model prefers no branch for it."""
    torch.manual_seed(0)
    return inject_adapters(nn.Linear(4, 4), dict(type='FLoRA', rank=2, dropout=dropout))


@pytest.mark.parametrize('device_type', ['cpu', 'cuda'])
@pytest.mark.parametrize('dropout, expected', [(0.0, 'merged'), (0.2, 'two_pass')])
def test_the_rule_never_takes_merged_for_a_layer_with_dropout(dropout, expected, device_type):
    assert small(dropout).rule_route(device_type) == expected


@pytest.mark.parametrize('dropout, expected', [(0.0, ('merged', 'branch', 'two_pass')), (0.2, ('branch', 'two_pass'))])
def test_merged_is_not_a_candidate_with_dropout(dropout, expected):
    """``merged`` builds ``W0 + dW`` and so cannot drop the adapter branch's input: never offered with dropout."""
    assert small(dropout).candidate_routes() == expected
    with pytest.raises(ValueError, match="cannot apply adapter dropout") if dropout else torch.no_grad():
        small(dropout).set_route('merged')


def test_signature_includes_dropout():
    """A layer with dropout has other candidates (no ``merged``), so it never shares a cached choice with its twin
    without dropout."""
    x = torch.randn(5, 4)
    assert small(0.0).route_key(x) != small(0.2).route_key(x)


def _ddp_rank(rank: int, port: int, out: str) -> None:
    import json
    import os
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    try:
        fastest = 'branch' if rank == 0 else 'merged'  # each rank's own timing disagrees with the other's

        def measure(candidates, make_step, device_type, reps=None):
            return {r: (1.0 if r == fastest else 2.0) for r in candidates}
        routes.measure = measure
        routes.set_policy('measure')
        routes.clear_cache()
        model = adapted()
        model(torch.randn(5, 16)).sum().backward()
        with open(f'{out}/rank{rank}.json', 'w') as f:
            json.dump([model[i].route for i in (0, 2, 4)], f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.subprocess
def test_under_ddp_every_rank_takes_rank_zeros_measured_route(tmp_path):
    import json
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_rank, args=(port, str(tmp_path)), nprocs=2)
    chosen = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert chosen == [['branch'] * 3, ['branch'] * 3]

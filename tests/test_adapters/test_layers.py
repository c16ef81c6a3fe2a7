"""Adapter maths, table-driven over {FLoRA, LoRA, DoRA, BitFit} x layer kinds."""
import math

import pytest
import torch
from torch import nn

from flora_mm.adapters import (AdapterLayer, adapter_parameters, adapter_state_dict, count_parameters,
                               inject_adapters, load_adapter_state_dict, merge_adapters, tucker_merged,
                               tucker_product)
from tests.test_adapters.cases import (LAYER_CASES, LAYER_METHODS, LOW_RANK_METHODS, METHODS, TRAINABLE_PAIRS, make,
                                      perturb_adapters)

CFG = dict(FLoRA=dict(rank=3, kernel_rank=2, scale=4.0), LoRA=dict(rank=2, alpha=4), DoRA=dict(rank=2, alpha=4),
           TriLoRA=dict(rank=2, alpha=4), IA3={}, SSL={}, SSB={}, BitFit=dict(targets=['linear', 'conv']))


def inject(model, method, **kw):
    return inject_adapters(model, dict(type=method, **{**CFG[method], **kw}))


@pytest.mark.parametrize('case', LAYER_CASES)
@pytest.mark.parametrize('method', METHODS)
def test_identity_at_init_and_only_adapter_grads(method, case):
    model, x = make(case)
    ref = model(x)
    if method == 'BitFit' and model[0].bias is None:
        with pytest.raises(ValueError, match='no trainable layer with a bias'):
            inject(model, method)
        return
    inject(model, method)
    out = model(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    out.square().sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(adapter_parameters(model))
    assert with_grad, 'an adapter must have something to train'


@pytest.mark.parametrize('case', LAYER_CASES)
@pytest.mark.parametrize('method', LAYER_METHODS)
def test_routes_agree_on_outputs_and_gradients(method, case):
    model, x = make(case)
    inject(model, method)
    perturb_adapters(model)
    layer = model[0]
    results = {}
    for impl in ('merged', 'two_pass', 'branch'):
        try:
            layer.set_route(impl)
        except ValueError:
            assert impl == 'branch', impl  # only the branch route may be unavailable
            continue
        xr = x.clone().requires_grad_()
        out = model(xr)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in adapter_parameters(model).items()}
        results[impl] = (out.detach(), xr.grad, grads)
        model.zero_grad(set_to_none=True)
    ref_out, ref_xgrad, ref_grads = results.pop('merged')
    assert results, 'two_pass must always exist'
    for impl, (out, xgrad, grads) in results.items():
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4, msg=impl)
        torch.testing.assert_close(xgrad, ref_xgrad, atol=1e-5, rtol=1e-4, msg=impl)
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-4, msg=f'{impl} {name}')


@pytest.mark.parametrize('method,case', TRAINABLE_PAIRS)
def test_merge_gives_plain_layer_with_same_outputs_and_keys(method, case):
    model, x = make(case)
    base_type, keys = type(model[0]), set(model.state_dict())
    inject(model, method)
    perturb_adapters(model)
    adapted = model(x).detach()
    merged = merge_adapters(model)
    assert type(merged[0]) is base_type
    assert set(merged.state_dict()) == keys
    assert not hasattr(merged, 'adapter_state')
    torch.testing.assert_close(merged(x), adapted, atol=1e-5, rtol=1e-4)


def _expected_count(method, layer):
    w = layer.weight
    out_c, in_c, kernel = w.shape[0], w.shape[1], w.shape[2:]
    groups = getattr(layer, 'groups', 1)
    if method == 'BitFit':
        return 0 if layer.bias is None else out_c
    if method in ('IA3', 'SSL', 'SSB'):  # one scale per output and / or per (layer) input channel
        return out_c * (method != 'SSL') + in_c * groups * (method != 'IA3')
    if method == 'FLoRA':
        r, r3 = CFG['FLoRA']['rank'], CFG['FLoRA']['kernel_rank']
        ranks = [min(r, out_c), min(r, in_c)] + [min(r3, k) for k in kernel]
        return math.prod(ranks) + sum(s * q for s, q in zip(w.shape, ranks))
    r = CFG[method]['rank']
    if not kernel:  # Linear: r (d_in + d_out)
        lora = r * (in_c + out_c)
    else:  # loralib ConvLoRA: A [r k, d_in k...], B [d_out/g k, r k]
        k1 = kernel[0]
        lora = r * k1 * (in_c * groups * math.prod(kernel) // k1) + (out_c // groups * k1) * r * k1
    rank = r * (kernel[0] if kernel else 1)
    return lora + (out_c if method == 'DoRA' else 0) + (rank if method == 'TriLoRA' else 0)


@pytest.mark.parametrize('case', LAYER_CASES)
@pytest.mark.parametrize('method', METHODS)
def test_parameter_counts_follow_the_formulas(method, case):
    model, _ = make(case)
    expected = _expected_count(method, model[0])
    total = sum(p.numel() for p in model.parameters())
    if method == 'BitFit' and expected == 0:
        return  # covered by test_identity_at_init_and_only_adapter_grads
    inject(model, method)
    counts = count_parameters(model)
    assert counts['adapter'] == expected
    assert counts['trainable'] == expected
    assert counts['total'] == total + (0 if method == 'BitFit' else expected)


@pytest.mark.parametrize('method,case', TRAINABLE_PAIRS)
def test_adapter_state_dict_round_trip(method, case):
    model, x = make(case)
    inject(model, method)
    perturb_adapters(model)
    saved = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    expected = model(x).detach()
    fresh, _ = make(case)
    inject(fresh, method)
    load_adapter_state_dict(fresh, saved)
    torch.testing.assert_close(fresh(x), expected)
    # the full state dict of the adapted model loads into a fresh adapted model too, with the base keys unchanged
    fresh2, _ = make(case, seed=5)
    inject(fresh2, method)
    fresh2.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh2(x), expected)


def _reference_tucker(core, factors):
    letters = 'abcdefgh'
    idx = 'ijklmnop'
    n = core.dim()
    spec = letters[:n] + ',' + ','.join(idx[i] + letters[i] for i in range(n)) + '->' + idx[:n]
    return torch.einsum(spec, core, *factors)


@pytest.mark.parametrize('case', [c for c in LAYER_CASES])
def test_flora_delta_is_the_tucker_reconstruction_with_bounded_multilinear_rank(case):
    model, _ = make(case)
    inject(model, 'FLoRA')
    perturb_adapters(model)
    layer = model[0]
    ref = _reference_tucker(layer.flora_core, layer.factors) * layer.scale
    torch.testing.assert_close(layer.delta_weight(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tucker_product(layer.flora_core, layer.factors), ref / layer.scale)
    delta = layer.delta_weight().detach().double()
    for mode, rank in enumerate(layer.ranks):
        unfolding = delta.movedim(mode, 0).flatten(1)
        assert torch.linalg.matrix_rank(unfolding, rtol=1e-4).item() <= rank  # float32 noise aside
    assert layer.ranks[1] <= layer.weight.shape[1]  # in-mode clamped to in_channels / groups


@pytest.mark.parametrize('case', [c for c in LAYER_CASES])
def test_tucker_merged_equals_base_plus_tucker_delta_with_same_gradients(case):
    """The merged route's contraction order (spatial Kronecker factor, input mode, one addmm) against the mode
    products, in float64 on every layer kind."""
    model, _ = make(case)
    inject(model, 'FLoRA')
    perturb_adapters(model)
    layer = model[0].double()
    operands = [layer.weight.detach().requires_grad_(), layer.flora_core, *layer.factors]

    def merged(weight, core, *factors):
        return tucker_merged(weight, core, factors, 0.7)

    def reference(weight, core, *factors):
        return weight + 0.7 * _reference_tucker(core, factors)

    torch.testing.assert_close(merged(*operands), reference(*operands))
    torch.testing.assert_close(layer.merged_weight(), layer.weight + layer.delta_weight())
    assert torch.autograd.gradcheck(merged, tuple(operands))


def test_flora_conv2d_shapes_follow_the_paper():
    conv = nn.Sequential(nn.Conv2d(64, 32, 3, padding=1))
    inject_adapters(conv, dict(type='FLoRA', rank=8, kernel_rank=2))
    layer = conv[0]
    assert tuple(layer.flora_core.shape) == (8, 8, 2, 2)
    assert [tuple(f.shape) for f in layer.factors] == [(32, 8), (64, 8), (3, 2), (3, 2)]
    assert not layer.flora_core.detach().any()
    dw = nn.Sequential(nn.Conv2d(96, 96, 7, padding=3, groups=96))  # ConvNeXt's depthwise conv
    inject_adapters(dw, dict(type='FLoRA', rank=8))
    assert [tuple(f.shape) for f in dw[0].factors] == [(96, 8), (1, 1), (7, 2), (7, 2)]


@pytest.mark.parametrize('make, rank, expected', [
    (lambda: nn.Conv2d(96, 96, 7, padding=3, groups=96), 8, 'merged'),  # depthwise: no branch form
    (lambda: nn.Linear(40, 160), 8, 'merged'),  # narrow: the weight-gradient GEMM is cheap
    (lambda: nn.Linear(96, 384), 8, 'merged'),
    (lambda: nn.Conv2d(64, 32, 3, padding=1), 8, 'merged'),
    (lambda: nn.Conv2d(64, 64, 3, padding=1), 8, 'branch'),  # k x k: its weight gradient is slow, ...
    (lambda: nn.Conv2d(64, 64, 3, padding=1), 40, 'merged'),  # ... but not slower than a rank-40 branch
    (lambda: nn.Linear(192, 768), 8, 'branch'),  # width 154: a rank-8 branch is cheaper ...
    (lambda: nn.Linear(192, 768), 128, 'merged'),  # ... a rank-128 one is not
    (lambda: nn.Linear(320, 1280), 40, 'branch'),  # wide: skip the weight gradient
    (lambda: nn.Linear(1536, 6144), 8, 'branch'),
    (lambda: nn.Conv2d(40, 80, 2, stride=2), 8, 'merged'),  # strided: the branch's extra input-grid passes ...
    (lambda: nn.Conv2d(160, 320, 2, stride=2), 8, 'merged'),  # ... outweigh the weight gradient until ...
    (lambda: nn.Conv2d(384, 768, 2, stride=2), 8, 'branch'),  # ... the layer is wide
    (lambda: nn.Conv2d(192, 384, 2, stride=2), 40, 'merged'),
], ids=['depthwise', 'linear40x160', 'linear96x384', 'conv64x32k3', 'conv64x64k3', 'conv64x64k3_r40',
        'linear192x768_r8', 'linear192x768_r128', 'linear320x1280_r40', 'linear1536x6144', 'conv40x80k2s2',
        'conv160x320k2s2', 'conv384x768k2s2', 'conv192x384k2s2_r40'])
@pytest.mark.parametrize('method', ['FLoRA', 'LoRA', 'DoRA'])
def test_rule_routes_per_device_type(make, rank, expected, method):
    """The CPU rule by width and rank (docs/benchmarks.md); on CUDA every mergeable layer without dropout is merged
    (the H200 measurements in results/gpu/)."""
    layer = inject_adapters(make(), dict(type=method, rank=rank))
    if method != 'FLoRA' and layer.weight.dim() > 2:
        expected = 'merged'  # loralib's ConvLoRA has no factorised form
    assert layer.rule_route('cpu') == expected
    assert layer.rule_route('cuda') == 'merged'
    assert layer.route == 'auto'  # decided at the first training forward, on the device the layer trains on


def test_lora_conv_matches_loralib_shapes():
    conv = nn.Sequential(nn.Conv2d(16, 24, 3, groups=2))
    inject_adapters(conv, dict(type='LoRA', rank=4))
    assert tuple(conv[0].lora_A.shape) == (4 * 3, 16 * 3)
    assert tuple(conv[0].lora_B.shape) == (24 // 2 * 3, 4 * 3)


@pytest.mark.parametrize('method', LOW_RANK_METHODS)
def test_eval_caches_the_merged_weight_and_invalidates_it(method, monkeypatch):
    model, x = make('conv2d')
    inject(model, method)
    perturb_adapters(model)
    layer = model[0]
    calls = []
    original = type(layer).merged_weight
    monkeypatch.setattr(type(layer), 'merged_weight', lambda self: calls.append(1) or original(self))
    model.eval()
    with torch.no_grad():
        first = model(x)
        second = model(x)
        assert len(calls) == 1 and torch.equal(first, second)
        perturb_adapters(model, seed=3)  # an in-place update (optimizer step, load_state_dict) invalidates
        third = model(x)
        assert len(calls) == 2 and not torch.equal(first, third)
    model.train()
    model.eval()
    with torch.no_grad():
        model(x)
    assert len(calls) == 3


@pytest.mark.parametrize('method', LOW_RANK_METHODS)
def test_dropout_only_in_training(method):
    model, x = make('linear')
    inject(model, method, dropout=0.5)
    perturb_adapters(model)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize('method', LOW_RANK_METHODS)
@pytest.mark.parametrize('impl', ['merged', 'two_pass', 'branch', 'auto'])
@pytest.mark.parametrize('case', ['conv2d', 'linear'])
def test_autocast_bf16(method, impl, case):
    if impl == 'branch' and case == 'conv2d' and method != 'FLoRA':
        pytest.skip("loralib's ConvLoRA has no branch form")
    model, x = make(case)
    inject(model, method, route=impl)
    perturb_adapters(model)
    ref = model(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    assert all(p.grad is not None for p in adapter_parameters(model).values())
    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(x)
    with torch.no_grad():  # the cache built under autocast is full precision
        assert model(x).dtype == torch.float32


def test_meta_device_injection_counts_without_memory():
    with torch.device('meta'):
        model = nn.Sequential(nn.Conv2d(512, 512, 3), nn.Linear(4096, 4096))
    inject_adapters(model, dict(type='FLoRA', rank=16))
    counts = count_parameters(model)
    assert counts['adapter'] == (16 * 16 * 4 + 512 * 16 * 2 + 3 * 2 * 2) + (16 * 16 + 4096 * 16 * 2)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize('method', LOW_RANK_METHODS)
def test_adapted_layer_is_still_an_instance_of_its_base(method):
    model, _ = make('conv2d')
    inject(model, method)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[0], AdapterLayer)
    assert f'route={model[0].route}' in repr(model)


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_identity_holds_for_base_weights_loaded_after_injection(method):
    """The usual order in OpenMMLab: build (adapters injected), then init_weights loads the pretrained base."""
    torch.manual_seed(0)
    pretrained = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    model = inject_adapters(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 5 * 5, 4)),
                            dict(type=method, **CFG[method]))
    model.load_state_dict(pretrained.state_dict(), strict=False)
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(model(x), pretrained(x))
    # a checkpoint that carries the adapter keeps its (trained) adapter state
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(0.1)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(trained)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())

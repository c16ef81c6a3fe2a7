"""The subspace-tuning paper's methods against formulas written from the raw parameters: (IA)^3 / SSL / SSB
(eq. 7) on linear, dense, grouped and depthwise convolutions; the MPC regularisers (eq. 20 / 21) in value and
gradient; MPC_n (eq. 25) on every layer that has it; and what cannot be merged says so."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flora_mm.adapters import (AdapterConfig, adapter_parameters, inject_adapters, merge_adapters, mpc_loss,
                               mpc_penalty)
from tests.test_adapters.cases import assert_matches_reference, perturb_adapters, run_against_raw_copies

SCALING_LAYERS = {
    'linear': (lambda: nn.Linear(6, 5), (3, 6)),
    'conv2d': (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 5, 5)),
    'grouped_conv2d': (lambda: nn.Conv2d(6, 4, 3, padding=1, groups=2), (2, 6, 5, 5)),
    'depthwise_conv2d': (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 5, 5)),
    'conv1d': (lambda: nn.Conv1d(4, 6, 3, groups=2), (2, 4, 7)),
}
ROUTES = ('merged', 'two_pass', 'branch')


def op(layer, x, weight, bias):
    return F.linear(x, weight, bias) if isinstance(layer, nn.Linear) else layer._conv_forward(x, weight, bias)


def reference_scaled_weight(w0, groups, out=None, inp=None):
    """``W[o, j] = l[o] W0[o, j] d[c]`` with ``c`` the layer input channel of weight column ``j`` of output
    channel ``o`` (``c = group(o) * d_in/groups + j``), written as a loop over output channels."""
    d_out, per_group = w0.shape[:2]
    rows = []
    for o in range(d_out):
        row = w0[o]
        if inp is not None:
            first = (o // (d_out // groups)) * per_group
            row = row * inp[first:first + per_group].view(-1, *(1, ) * (w0.dim() - 2))
        if out is not None:
            row = row * out[o]
        rows.append(row)
    return torch.stack(rows)


KEYS = {'IA3': ('ia3_l', None), 'SSL': (None, 'ssl_d'), 'SSB': ('ssb_l', 'ssb_d')}


@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('kind', SCALING_LAYERS)
@pytest.mark.parametrize('method', ['IA3', 'SSL', 'SSB'])
def test_scaling_routes_match_the_reference(method, kind, route):
    factory, shape = SCALING_LAYERS[kind]
    torch.manual_seed(0)
    model = nn.Sequential(factory())
    inject_adapters(model, dict(type=method))
    layer = model[0]
    x = torch.randn(shape)
    torch.testing.assert_close(layer(x), op(layer, x, layer.weight, layer.bias))  # identity at init
    perturb_adapters(model, std=0.5)
    layer.set_route(route)
    x.requires_grad_()
    out = layer(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)

    out_key, in_key = KEYS[method]
    p = {k: v.detach().clone().requires_grad_() for k, v in layer.adapter_parameters().items()}
    groups = getattr(layer, 'groups', 1)
    weight = reference_scaled_weight(layer.weight.detach(), groups, p.get(out_key), p.get(in_key))
    xr = x.detach().clone().requires_grad_()
    ref = op(layer, xr, weight, layer.bias.detach())
    ref.backward(grad_out)
    assert_matches_reference(out, ref, x, xr, adapter_parameters(layer), p, atol=1e-5)
    torch.testing.assert_close(layer.merged_weight(), weight.detach() if weight.requires_grad else weight)


@pytest.mark.parametrize('method, count', [
    ('IA3', lambda d_in, d_out: d_out), ('SSL', lambda d_in, d_out: d_in), ('SSB', lambda d_in, d_out: d_in + d_out)])
def test_scaling_parameter_counts(method, count):
    for factory, _ in SCALING_LAYERS.values():
        base = factory()
        d_in = base.in_features if isinstance(base, nn.Linear) else base.in_channels
        d_out = base.out_features if isinstance(base, nn.Linear) else base.out_channels
        layer = inject_adapters(base, dict(type=method))
        assert sum(p.numel() for p in layer.adapter_parameters().values()) == count(d_in, d_out)


def test_depthwise_ssl_is_ia3():
    """On a depthwise convolution every input channel feeds exactly its own output channel."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, groups=4)
    ia3, ssl = (inject_adapters(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)), dict(type=m))[0] for m in ('IA3', 'SSL'))
    for layer in (ia3, ssl):
        layer.weight.data.copy_(conv.weight.data)
    v = torch.rand(4) + 0.5
    ia3.ia3_l.data.copy_(v)
    ssl.ssl_d.data.copy_(v)
    torch.testing.assert_close(ia3.merged_weight(), ssl.merged_weight())


@pytest.mark.parametrize('method', ['IA3', 'SSL', 'SSB', 'TriLoRA'])
def test_merge_is_exact(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(4 * 25, 5))
    x = torch.randn(2, 6, 5, 5)
    inject_adapters(model, dict(type=method, **({'rank': 2} if method == 'TriLoRA' else {})))
    perturb_adapters(model, std=0.3)
    model.eval()
    with torch.no_grad():
        before = model(x)
    merge_adapters(model)
    assert [type(m) for m in model] == [nn.Conv2d, nn.Flatten, nn.Linear]
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ MPC
def reference_penalty(form, inputs, outputs):
    total = 0.0
    for f in inputs:
        total = total + torch.linalg.matrix_norm(f.t() @ f - torch.eye(f.shape[1])) ** 2
    for f in outputs:
        gram = f.t() @ f
        target = torch.diag(torch.diag(gram)) if form == 'diagonal' else torch.eye(f.shape[1])
        total = total + torch.linalg.matrix_norm(gram - target) ** 2
    return total


MPC_CASES = [
    ('LoRA', nn.Linear(7, 5), lambda p: ([p['lora_A'].t()], [p['lora_B']])),
    ('LoRA', nn.Conv2d(4, 6, 3), lambda p: ([p['lora_A'].t()], [p['lora_B']])),
    ('TriLoRA', nn.Linear(7, 5), lambda p: ([p['trilora_A'].t()], [p['trilora_B']])),
    ('FLoRA', nn.Linear(7, 5), lambda p: ([p['flora_factor_1']], [p['flora_factor_0']])),
    ('FLoRA', nn.Conv2d(4, 6, 3, groups=2), lambda p: ([p['flora_factor_1'], p['flora_factor_2'],
                                                        p['flora_factor_3']], [p['flora_factor_0']])),
]


@pytest.mark.parametrize('form', ['orthogonal', 'diagonal'])
@pytest.mark.parametrize('method, base, factors', MPC_CASES)
def test_mpc_regulariser_value_and_gradient(method, base, factors, form):
    torch.manual_seed(0)
    layer = inject_adapters(base, dict(type=method, rank=2, mpc=form, mpc_weight=0.5))
    with torch.no_grad():
        for p in layer.adapter_parameters().values():
            p.normal_(std=0.7)
    penalty = layer.mpc_penalty()
    penalty.backward()
    p = {k: v.detach().clone().requires_grad_() for k, v in layer.adapter_parameters().items()}
    ref = reference_penalty(form, *factors(p))
    ref.backward()
    torch.testing.assert_close(penalty, ref)
    for name, param in layer.adapter_parameters().items():
        expected = p[name].grad if p[name].grad is not None else torch.zeros_like(param)
        got = param.grad if param.grad is not None else torch.zeros_like(param)
        torch.testing.assert_close(got, expected, msg=name)
    model = nn.Sequential(layer)
    torch.testing.assert_close(mpc_loss(model), 0.5 * ref.detach())  # weight x mean over the one layer


def test_mpc_loss_is_the_weighted_mean_over_layers_and_absent_when_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    assert mpc_loss(inject_adapters(model, dict(type='LoRA', rank=2))) is None
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    inject_adapters(model, dict(type='LoRA', rank=2, mpc='orthogonal', mpc_weight=0.2))
    penalties = [model[i].mpc_penalty() for i in (0, 1)]
    torch.testing.assert_close(mpc_loss(model), 0.2 * (penalties[0] + penalties[1]) / 2)
    assert mpc_penalty([torch.eye(3)[:, :2]], [torch.eye(3)[:, :2] * 2], 'diagonal') == 0


def test_mpc_loss_is_float32_under_autocast():
    model = inject_adapters(nn.Sequential(nn.Linear(6, 6)), dict(type='LoRA', rank=2, mpc='diagonal')).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert mpc_loss(model).dtype == torch.float32


NONLINEAR = [('LoRA', 'linear'), ('TriLoRA', 'linear'), ('FLoRA', 'linear'), ('FLoRA', 'conv2d')]


@pytest.mark.parametrize('dropout', [0.0, 0.3])
@pytest.mark.parametrize('method, kind', NONLINEAR)
def test_mpc_nonlinear_branch_matches_the_reference(method, kind, dropout):
    """MPC_n: ``op(x, W0, b) + s h(drop(x) V G^T) U^T`` (FLoRA's convolution: the activation after the core)."""
    factory, shape = dict(linear=(lambda: nn.Linear(7, 5), (3, 7)),
                          conv2d=(lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 5, 5)))[kind]
    torch.manual_seed(0)
    model = nn.Sequential(factory())
    inject_adapters(model, dict(type=method, rank=2, scale=3.0, dropout=dropout, mpc='nonlinear',
                                mpc_nonlinearity='tanh'))
    layer = model[0]
    assert layer.route == 'branch' and layer.candidate_routes() == ('branch', )
    perturb_adapters(model, std=0.5)
    x, out, grad_out, mask, p, xr = run_against_raw_copies(layer, shape, dropout, seed=5)
    xd = xr * mask
    base = op(layer, xr, layer.weight.detach(), layer.bias.detach())
    if method == 'LoRA':
        branch = torch.tanh(xd @ p['lora_A'].t()) @ p['lora_B'].t()
    elif method == 'TriLoRA':
        branch = torch.tanh(xd @ p['trilora_A'].t() @ torch.diag(p['trilora_d'])) @ p['trilora_B'].t()
    elif kind == 'linear':
        branch = torch.tanh(xd @ p['flora_factor_1'] @ p['flora_core'].t()) @ p['flora_factor_0'].t()
    else:
        h = torch.einsum('nihw,ib->nbhw', xd, p['flora_factor_1'])
        kernel = torch.einsum('abcd,kc,ld->abkl', p['flora_core'], p['flora_factor_2'], p['flora_factor_3'])
        h = torch.tanh(F.conv2d(h, kernel, padding=1))
        branch = torch.einsum('nahw,oa->nohw', h, p['flora_factor_0'])
    ref = base + 3.0 * branch
    ref.backward(grad_out)
    assert_matches_reference(out, ref, x, xr, adapter_parameters(layer), p, atol=1e-5)
    layer.eval()  # no weight form to cache in eval mode either
    with torch.no_grad():
        torch.testing.assert_close(layer(xr.detach()), base.detach() + 3.0 * _no_drop(branch, method, kind, p, xr),
                                   atol=1e-5, rtol=1e-4)


def _no_drop(branch, method, kind, p, x):
    if method == 'LoRA':
        return torch.tanh(x @ p['lora_A'].t()) @ p['lora_B'].t()
    if method == 'TriLoRA':
        return torch.tanh(x @ p['trilora_A'].t() @ torch.diag(p['trilora_d'])) @ p['trilora_B'].t()
    if kind == 'linear':
        return torch.tanh(x @ p['flora_factor_1'] @ p['flora_core'].t()) @ p['flora_factor_0'].t()
    h = torch.einsum('nihw,ib->nbhw', x, p['flora_factor_1'])
    kernel = torch.einsum('abcd,kc,ld->abkl', p['flora_core'], p['flora_factor_2'], p['flora_factor_3'])
    return torch.einsum('nahw,oa->nohw', torch.tanh(F.conv2d(h, kernel, padding=1)), p['flora_factor_0'])


def test_mpc_nonlinear_cannot_be_merged_and_says_why():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    inject_adapters(model, dict(type='LoRA', rank=2, mpc='nonlinear'))
    before = [m.weight.clone() for m in model]
    with pytest.raises(ValueError, match=r"cannot merge LoRALinear .*mpc='nonlinear' \(MPC_n\).*no weight form"):
        merge_adapters(model)
    assert all(torch.equal(m.weight, b) for m, b in zip(model, before))  # nothing touched
    with pytest.raises(NotImplementedError, match='no weight form'):
        model[0].delta_weight()
    with pytest.raises(ValueError, match='only the branch route'):
        model[0].set_route('merged')


@pytest.mark.parametrize('method, base, match', [
    ('LoRA', nn.Conv2d(4, 4, 3), "mpc='nonlinear' puts the activation between the factors"),
    ('FLoRA', nn.Conv2d(4, 4, 3, groups=4), "mpc='nonlinear' puts the activation between the factors"),
])
def test_mpc_nonlinear_refuses_layers_without_a_factorised_branch(method, base, match):
    with pytest.raises(ValueError, match=match):
        inject_adapters(nn.Sequential(base), dict(type=method, rank=2, mpc='nonlinear'))


@pytest.mark.parametrize('cfg, match', [
    (dict(type='LoRA', mpc='spectral'), 'unknown mpc'),
    (dict(type='LoRA', mpc='orthogonal', mpc_weight=0), 'mpc_weight must be a finite number > 0'),
    (dict(type='LoRA', mpc='orthogonal', mpc_weight=-1.0), 'mpc_weight must be a finite number > 0'),
    (dict(type='LoRA', mpc='nonlinear', mpc_nonlinearity='swish'), 'unknown mpc_nonlinearity'),
    (dict(type='FLoRA', mpc='nonlinear', dora=True), 'no weight form'),
    (dict(type='TriLoRA', init='uniform'), 'unknown init'),
    (dict(type='FLoRA', dora='yes'), 'dora must be True or False'),
])
def test_bad_mpc_and_variant_options(cfg, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdapterConfig.from_dict(cfg)


def test_flora_with_dora_starts_at_the_base_and_keeps_its_magnitude_keys():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 5, 5)
    ref = conv(x)
    layer = inject_adapters(conv, dict(type='FLoRA', rank=2, dora=True))
    torch.testing.assert_close(layer(x), ref)
    assert set(layer.state_dict()) >= {'weight', 'bias', 'flora_core', 'dora_magnitude'}
    torch.testing.assert_close(layer.dora_magnitude, conv.weight.detach().flatten(1).norm(dim=1))
    assert math.isclose(layer.scale, 1.0)


def test_a_training_forward_leaves_its_regulariser_for_mpc_loss():
    """The term of a training forward (computed while the layer's factors are whole, as under FSDP) is the one
    mpc_loss returns -- and it is consumed, so the next step's loss never reuses it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    inject_adapters(model, dict(type='LoRA', rank=2, mpc='diagonal', mpc_weight=0.3))
    perturb_adapters(model)
    model(torch.randn(2, 6))
    stashed = [model[i]._mpc_term for i in (0, 1)]
    loss = mpc_loss(model)
    assert loss.grad_fn is not None and not any('_mpc_term' in m.__dict__ for m in model)
    torch.testing.assert_close(loss, 0.3 * (stashed[0] + stashed[1]) / 2)
    torch.testing.assert_close(loss, mpc_loss(model))  # recomputed from the same factors: the same value


@pytest.mark.parametrize('method, base, expected', [
    ('LoRA', nn.Linear(7, 5), 2 * (7 + 5)),
    ('LoRA', nn.Conv2d(4, 6, 3, groups=2), 2 * 3 ** 2 * (4 + 6 // 2)),
    ('DoRA', nn.Linear(7, 5), 2 * (7 + 5) + 5),
    ('TriLoRA', nn.Linear(7, 5), 2 * (7 + 5) + 2),
    ('TriLoRA', nn.Conv2d(4, 6, 3, groups=2), 2 * 3 ** 2 * (4 + 6 // 2) + 2 * 3),
    ('FLoRA', nn.Linear(7, 5), 2 ** 2 + 2 * (7 + 5)),
    ('FLoRA', nn.Conv2d(4, 6, 3), 2 ** 2 * 2 ** 2 + 2 * (6 + 4) + 2 * 3 * 2),
])
def test_documented_parameter_counts(method, base, expected):
    """The "parameters per layer" column of the README's method table (flora_mm.adapters.methods.method_table)."""
    layer = inject_adapters(base, dict(type=method, rank=2, **({'kernel_rank': 2} if method == 'FLoRA' else {})))
    assert sum(p.numel() for p in layer.adapter_parameters().values()) == expected


def test_mpc_nonlinear_adapter_state_dict_round_trips():
    """Not mergeable, but its adapter-only state is ordinary tensors: saved and loaded into a fresh model it gives
    the same outputs."""
    from flora_mm.adapters import adapter_state_dict, load_adapter_state_dict
    torch.manual_seed(0)
    model = inject_adapters(nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 3)),
                            dict(type='LoRA', rank=2, mpc='nonlinear'))
    perturb_adapters(model)
    x = torch.randn(4, 6)
    saved = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    torch.manual_seed(0)
    fresh = inject_adapters(nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 3)),
                            dict(type='LoRA', rank=2, mpc='nonlinear'))
    load_adapter_state_dict(fresh, saved)
    torch.testing.assert_close(fresh(x), model(x))

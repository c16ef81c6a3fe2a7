"""Every route of every low-rank adapter against a reference formula written from the raw parameters (not the
layer's own ``delta_weight`` / ``merged_weight``), with and without adapter dropout, in value and in gradient.

References: FLoRA ``dW = s G x_1 A_0 x_2 A_1 ...`` (one ``einsum`` over the Tucker modes); LoRA ``dW = s B A``
(loralib's row-major reshape for convolutions); TriLoRA ``dW = s B diag(d) A`` on the same matrix; DoRA
``W = m (W0 + dW) / ||W0 + dW||`` per output row with the norm a constant in backward (DoRA paper Sec. 4.3), over
LoRA's update (``DoRA``) or any other (``FLoRA+dora``, ``TriLoRA+dora``). Adapter dropout drops the adapter branch's input only:
``op(x, W0, b) + op(drop(x), dW)`` -- for DoRA the channel scale multiplies the sum. The dropout mask is
regenerated from the same RNG seed as a mask on ones.
"""
import string

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flora_mm.adapters import adapter_parameters, inject_adapters
from tests.test_adapters.cases import assert_matches_reference, perturb_adapters, run_against_raw_copies

SCALE = 4.0  # not 1: a route that forgets the scale must show
LAYERS = {
    'linear': (lambda: nn.Linear(12, 10), (3, 4, 12)),
    'conv2d': (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 7, 7)),
}
ROUTES = ('merged', 'two_pass', 'branch')


def op(layer, x, weight, bias):
    return F.linear(x, weight, bias) if isinstance(layer, nn.Linear) else layer._conv_forward(x, weight, bias)


def reference_delta(method, p, weight_shape):
    """``dW`` from the raw parameters ``p`` (a dict of leaf tensors)."""
    method = method.split('+')[0]
    if method == 'TriLoRA':
        return SCALE * (p['trilora_B'] @ torch.diag(p['trilora_d']) @ p['trilora_A']).reshape(weight_shape)
    if method == 'FLoRA':
        order = len(weight_shape)
        core, factors = p['flora_core'], [p[f'flora_factor_{n}'] for n in range(order)]
        inner, outer = string.ascii_lowercase[:order], string.ascii_uppercase[:order]
        spec = f'{inner},' + ','.join(f'{o}{i}' for o, i in zip(outer, inner)) + f'->{outer}'
        return SCALE * torch.einsum(spec, core, *factors)
    return SCALE * (p['lora_B'] @ p['lora_A']).reshape(weight_shape)


def reference_forward(method, layer, p, x, x_drop):
    w0, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    delta = reference_delta(method, p, w0.shape)
    if method != 'DoRA' and not method.endswith('+dora'):
        return op(layer, x, w0, bias) + op(layer, x_drop, delta, None)
    direction = w0 + delta
    scale = p['dora_magnitude'] / direction.detach().flatten(1).norm(dim=1)
    out = op(layer, x, w0, None) + op(layer, x_drop, delta, None)
    channel = (1, ) * (out.dim() - 2)
    scale = scale if isinstance(layer, nn.Linear) else scale.view(-1, *channel)
    return out * scale + (bias if isinstance(layer, nn.Linear) else bias.view(-1, *channel))


#: Every (method, layer, route, dropout) that exists: ``merged`` cannot apply dropout, and loralib's reshaped conv
#: update has no factorised branch.
METHODS = ('FLoRA', 'LoRA', 'DoRA', 'TriLoRA', 'FLoRA+dora', 'TriLoRA+dora')
CASES = [(m, k, r, d) for m in METHODS for k in LAYERS for r in ROUTES for d in (0.0, 0.3)
         if not (r == 'merged' and d) and not (r == 'branch' and not m.startswith('FLoRA') and k != 'linear')]


def config(method, **kw):
    name, _, variant = method.partition('+')
    cfg = dict(type=name, rank=2, scale=SCALE, **kw)
    if name == 'FLoRA':
        cfg['kernel_rank'] = 2
    if variant:
        cfg[variant] = True
    return cfg


@pytest.mark.parametrize('method, kind, route, dropout', CASES)
def test_route_matches_the_reference_formula(method, kind, route, dropout):
    factory, shape = LAYERS[kind]
    torch.manual_seed(0)
    layer = nn.Sequential(factory())
    inject_adapters(layer, config(method, dropout=dropout))
    perturb_adapters(layer)
    layer = layer[0]
    layer.set_route(route)
    x, out, grad_out, mask, p, xr = run_against_raw_copies(layer, shape, dropout, seed=123)
    ref = reference_forward(method, layer, p, xr, xr * mask)
    ref.backward(grad_out)
    assert_matches_reference(out, ref, x, xr, adapter_parameters(layer), p)

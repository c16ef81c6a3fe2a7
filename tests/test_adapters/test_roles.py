"""One notation by role: ``dW = s U G V^T`` (Linear) with ``factor_out`` U, ``factor_in`` V, ``core`` G, and the
kernel factors of convolutions; ``ROLE_KEYS`` maps each role to its unchanged state-dict key."""
import pytest
import torch
from torch import nn

from flora_mm.adapters import AdapterConfig, FLoRAConv2d, FLoRALinear, LoRALinear


def _randomised(layer):
    with torch.no_grad():
        for p in layer.adapter_parameters().values():
            p.normal_()
    return layer


@pytest.mark.parametrize('cls, base, cfg', [
    (FLoRALinear, nn.Linear(6, 5), dict(type='FLoRA', rank=3, scale=0.5)),
    (LoRALinear, nn.Linear(6, 5), dict(type='LoRA', rank=2, scale=2.0)),
])
def test_linear_update_by_roles(cls, base, cfg):
    layer = _randomised(cls.from_base(base, AdapterConfig.from_dict(cfg)))
    u, v = layer.factor_out, layer.factor_in
    g = torch.eye(u.shape[1]) if layer.core is None else layer.core
    torch.testing.assert_close(layer.delta_weight(), layer.scale * u @ g @ v.t())
    assert u.shape[0] == 5 and v.shape[0] == 6


def test_conv_update_by_roles_and_keys():
    layer = _randomised(FLoRAConv2d.from_base(nn.Conv2d(4, 6, 3), AdapterConfig.from_dict(
        dict(type='FLoRA', rank=2, kernel_rank=2, scale=3.0))))
    k1, k2 = layer.kernel_factors
    expected = torch.einsum('abcd,oa,ib,kc,ld->oikl', layer.core, layer.factor_out, layer.factor_in, k1, k2)
    torch.testing.assert_close(layer.delta_weight(), 3.0 * expected)
    state = layer.state_dict()
    for role in ('core', 'factor_out', 'factor_in'):
        assert torch.equal(state[layer.ROLE_KEYS[role]], getattr(layer, role))
    assert torch.equal(state['flora_factor_2'], k1) and torch.equal(state['flora_factor_3'], k2)


def test_lora_keys_hold_the_roles():
    layer = _randomised(LoRALinear.from_base(nn.Linear(6, 5), AdapterConfig.from_dict(dict(type='LoRA', rank=2))))
    state = layer.state_dict()
    assert torch.equal(state['lora_B'], layer.factor_out) and torch.equal(state['lora_A'].t(), layer.factor_in)
    assert layer.ROLE_KEYS == {'factor_out': 'lora_B', 'factor_in': 'lora_A'} and layer.core is None

"""Each method is declared once (adapters/methods.py); config validation and injection read only the declaration."""
import pytest
import torch
from torch import nn

from flora_mm.adapters import METHODS, AdapterConfig, LoRALinear, Method, inject_adapters, register_method
from flora_mm.adapters.methods import LOW_RANK_OPTIONS


@pytest.fixture
def toy(monkeypatch):
    """A new method declared the documented way: LoRA's Linear layer, its own default targets, no dropout."""
    monkeypatch.setattr('flora_mm.adapters.methods.METHODS', dict(METHODS))
    import flora_mm.adapters.config as config
    import flora_mm.adapters.methods as methods
    monkeypatch.setattr(config, 'METHODS', methods.METHODS)
    monkeypatch.setattr('flora_mm.adapters.inject.METHODS', methods.METHODS, raising=False)
    return register_method(Method('Toy', options=LOW_RANK_OPTIONS - {'dropout'}, layers={nn.Linear: LoRALinear},
                                  default_targets=('linear', )))


def test_a_registered_method_is_validated_and_injected(toy, caplog):
    cfg = AdapterConfig.from_dict(dict(type='Toy', rank=2, dropout=0.5))  # another method's option: dropped
    assert cfg.method is toy and cfg.targets == ('linear', ) and cfg.dropout == 0.0
    assert "Toy adapter: ignoring option(s) ['dropout']" in caplog.text
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(4, 4, 1))
    inject_adapters(model, cfg)
    assert isinstance(model[0], LoRALinear) and type(model[1]) is nn.Conv2d
    with pytest.raises(ValueError, match=r"Toy adapter got unknown option\(s\) \['tpyo'\]"):
        AdapterConfig.from_dict(dict(type='Toy', tpyo=1))


def test_a_name_is_declared_once(toy):
    with pytest.raises(ValueError, match="'Toy' is already declared"):
        register_method(Method('Toy', options=frozenset()))


@pytest.mark.parametrize('name, layer_types, trains_bias', [
    ('FLoRA', {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d}, False),
    ('LoRA', {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d}, False),
    ('DoRA', {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d}, False),
    ('BitFit', set(), True),
])
def test_shipped_declarations(name, layer_types, trains_bias):
    method = METHODS[name]
    assert set(method.layers) == layer_types and method.trains_bias == trains_bias
    for base, adapted in method.layers.items():  # each adapted class computes its base layer's operator
        assert issubclass(adapted, base) and name in adapted.__name__
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    if method.layers:  # identity at initialisation: the core / B starts at zero
        adapted = method.layers[nn.Linear].from_base(layer, AdapterConfig.from_dict(dict(type=name, rank=2)))
        torch.testing.assert_close(adapted(x), nn.functional.linear(x, layer.weight, layer.bias))

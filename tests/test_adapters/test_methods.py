"""Each method is declared once (adapters/methods.py and its own module); config validation and injection read only
the declaration, and a new method is one file: its layer classes, its options dataclass, one register call."""
import dataclasses
import inspect

import pytest
import torch
from torch import nn

import flora_mm.adapters as adapters
from flora_mm.adapters import METHODS, AdapterConfig, Method, NoOptions, inject_adapters, register_method
from flora_mm.adapters.scaling import ScalingLayer

ALL_LAYERS = {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d}


@dataclasses.dataclass(frozen=True)
class ToyOptions(NoOptions):
    start: float = 1.0

    def validate(self, method):
        if self.start <= 0:
            raise ValueError(f'{method} adapter: start must be positive, got {self.start}')


class ToyLinear(ScalingLayer, nn.Linear):
    """A new method written the documented way: output channels scaled by a vector starting at ``start``."""
    OUT_KEY = 'toy_l'
    _op = staticmethod(nn.functional.linear)

    def _init_adapter(self, cfg):
        super()._init_adapter(cfg)
        with torch.no_grad():
            self.toy_l.fill_(cfg.start)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr('flora_mm.adapters.methods.METHODS', dict(METHODS))
    return register_method(Method('Toy', options=ToyOptions, layers={nn.Linear: ToyLinear},
                                  default_targets=('linear', )))


def test_a_registered_method_is_validated_and_injected(toy, caplog):
    cfg = AdapterConfig.from_dict(dict(type='Toy', start=2.0, dropout=0.5))  # another method's option: dropped
    assert cfg.method is toy and cfg.targets == ('linear', ) and cfg.start == 2.0
    assert "Toy adapter: ignoring option(s) ['dropout']" in caplog.text
    with pytest.raises(AttributeError, match="Toy adapter has no option 'dropout'"):
        cfg.dropout
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(4, 4, 1))
    inject_adapters(model, cfg)
    assert isinstance(model[0], ToyLinear) and type(model[1]) is nn.Conv2d
    torch.testing.assert_close(model[0].merged_weight(), 2.0 * model[0].weight)
    with pytest.raises(ValueError, match=r"Toy adapter got unknown option\(s\) \['tpyo'\]"):
        AdapterConfig.from_dict(dict(type='Toy', tpyo=1))
    with pytest.raises(ValueError, match='start must be positive'):
        AdapterConfig.from_dict(dict(type='Toy', start=0.0))


def test_a_name_is_declared_once(toy):
    with pytest.raises(ValueError, match="'Toy' is already declared"):
        register_method(Method('Toy'))


@pytest.mark.parametrize('name, layer_types, trains_bias, own', [
    ('FLoRA', ALL_LAYERS, False, {'rank', 'kernel_rank', 'scale', 'dropout', 'init', 'dora', 'mpc'}),
    ('LoRA', ALL_LAYERS, False, {'rank', 'scale', 'dropout', 'init', 'dora', 'mpc'}),
    ('DoRA', ALL_LAYERS, False, {'rank', 'scale', 'dropout', 'init', 'dora', 'mpc'}),
    ('TriLoRA', ALL_LAYERS, False, {'rank', 'scale', 'dropout', 'init', 'dora', 'mpc'}),
    ('IA3', ALL_LAYERS, False, set()),
    ('SSL', ALL_LAYERS, False, set()),
    ('SSB', ALL_LAYERS, False, set()),
    ('BitFit', set(), True, set()),
])
def test_shipped_declarations(name, layer_types, trains_bias, own):
    method = METHODS[name]
    assert set(method.layers) == layer_types and method.trains_bias == trains_bias
    fields = {f.name for f in dataclasses.fields(method.options)}
    assert own <= fields and (bool(own) or not fields)
    for base, adapted in method.layers.items():  # each adapted class computes its base layer's operator
        assert issubclass(adapted, base) and adapted.__name__ == f'{name}{base.__name__}'
        assert getattr(adapters, adapted.__name__) is adapted  # a named, importable class
        assert inspect.getsource(adapted).startswith(f'class {adapted.__name__}(')  # declared by a class statement
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    if method.layers:  # identity at initialisation: the core / B / d starts at zero, the scales at one
        options = dict(rank=2) if 'rank' in fields else {}
        adapted = method.layers[nn.Linear].from_base(layer, AdapterConfig.from_dict(dict(type=name, **options)))
        torch.testing.assert_close(adapted(x), nn.functional.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize('cfg, foreign', [
    (dict(type='IA3', init='kaiming'), ['init']),
    (dict(type='SSB', rank=4, scale=2.0), ['rank', 'scale']),
    (dict(type='LoRA', rank=2, kernel_rank=3), ['kernel_rank']),
])
def test_no_option_of_one_method_is_taken_by_another(cfg, foreign, caplog):
    parsed = AdapterConfig.from_dict(cfg)
    assert f'ignoring option(s) {foreign}' in caplog.text
    for key in foreign:
        with pytest.raises(AttributeError, match=f'has no option {key!r}'):
            getattr(parsed, key)
    assert not set(foreign) & set(parsed.to_dict())


def test_dora_is_lora_with_the_magnitude_and_refuses_to_drop_it():
    assert AdapterConfig.from_dict(dict(type='DoRA')).dora is True
    with pytest.raises(ValueError, match='dora is always True for DoRA'):
        AdapterConfig.from_dict(dict(type='DoRA', dora=False))

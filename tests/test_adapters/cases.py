"""Layer cases shared by the adapter tests: name -> (layer factory, input shape)."""
import torch
from torch import nn

LAYER_CASES = {
    'linear': (lambda: nn.Linear(12, 10), (3, 4, 12)),
    'linear_nobias': (lambda: nn.Linear(12, 10, bias=False), (5, 12)),
    'conv1d': (lambda: nn.Conv1d(6, 8, 3, padding=1), (2, 6, 11)),
    'conv2d': (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 9, 9)),
    'conv3d': (lambda: nn.Conv3d(4, 6, 3, padding=1), (1, 4, 5, 5, 5)),
    'grouped_conv2d': (lambda: nn.Conv2d(8, 12, 3, padding=1, groups=4), (2, 8, 7, 7)),
    'depthwise_conv2d': (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), (2, 8, 9, 9)),
    'strided_dilated_reflect_conv2d':
    (lambda: nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2, padding_mode='reflect'), (2, 6, 13, 13)),
    'pointwise_conv2d': (lambda: nn.Conv2d(6, 8, 1, bias=False), (2, 6, 5, 5)),
    'rect_circular_conv2d': (lambda: nn.Conv2d(5, 7, (3, 5), padding=(1, 2), padding_mode='circular'), (1, 5, 8, 8)),
}
LOW_RANK_METHODS = ('FLoRA', 'LoRA', 'DoRA')
METHODS = LOW_RANK_METHODS + ('BitFit', )


def make(case, seed=0):
    """(layer wrapped in a Sequential, input tensor), deterministic."""
    factory, shape = LAYER_CASES[case]
    torch.manual_seed(seed)
    return nn.Sequential(factory()), torch.randn(shape)


def perturb_adapters(model, std=0.2, seed=1):
    """Give every adapter parameter a non-trivial value (at init dW = 0 hides most bugs)."""
    from flora_mm.adapters import adapter_parameters
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * std)


def _has_bias(case):
    return LAYER_CASES[case][0]().bias is not None


#: (method, case) pairs where the method has something to train (BitFit needs a bias).
TRAINABLE_PAIRS = [(m, c) for m in METHODS for c in LAYER_CASES if m != 'BitFit' or _has_bias(c)]

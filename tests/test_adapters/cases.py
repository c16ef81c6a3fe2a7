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
LOW_RANK_METHODS = ('FLoRA', 'LoRA', 'DoRA', 'TriLoRA')
SCALING_METHODS = ('IA3', 'SSL', 'SSB')
#: every method that adapts layers, i.e. has routes
LAYER_METHODS = LOW_RANK_METHODS + SCALING_METHODS
METHODS = LAYER_METHODS + ('BitFit', )


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


def assert_matches_reference(out, ref, x, xr, params, ref_params, atol=2e-5, rtol=1e-4):
    """The layer's output and input gradient equal the reference's, and every adapter parameter's gradient equals
    that of its raw copy in ``ref_params`` (both backward passes already run)."""
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(x.grad, xr.grad, atol=atol, rtol=rtol)
    for name, param in params.items():
        torch.testing.assert_close(param.grad, ref_params[name].grad, atol=2.5 * atol, rtol=rtol, msg=f'd/d{name}')


def run_against_raw_copies(layer, shape, dropout, seed):
    """Run ``layer`` forward and backward on a random input (dropout drawn from ``seed``); return what a reference
    needs to redo it from raw tensors: ``(x, out, grad_out, mask, params, xr)`` -- the dropout mask regenerated from
    the same seed as a mask on ones, detached leaf copies of the adapter parameters and of the input."""
    import torch.nn.functional as F
    x = torch.randn(shape, requires_grad=True)
    torch.manual_seed(seed)
    out = layer(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    torch.manual_seed(seed)
    mask = F.dropout(torch.ones(shape), dropout, training=True) if dropout else torch.ones(shape)
    params = {k: v.detach().clone().requires_grad_() for k, v in layer.adapter_parameters().items()}
    return x, out, grad_out, mask, params, x.detach().clone().requires_grad_()

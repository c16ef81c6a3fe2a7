"""What the factorised methods (LoRA, DoRA, TriLoRA, FLoRA) share: the scale, the factors by role, the cost-model
route rule, and the matrix-pattern constraints (MPC) of the subspace-tuning paper (Si et al., Sec. 4.2).

Notation (the package's one, shared with :mod:`~flora_mm.adapters.functional`): for a Linear layer
``dW = s U G V^T`` with ``factor_out`` ``U [d_out, r1]``, ``core`` ``G [r1, r2]`` (LoRA: none, ``G = I``; TriLoRA:
diagonal) and ``factor_in`` ``V [d_in, r2]``; FLoRA's convolutions add one ``kernel`` factor per spatial mode. In
the paper's row-vector notation ``x W`` (``W`` maps inputs to outputs), its ``A`` is our ``V`` and its ``B`` our
``U^T``.

MPC (``mpc=`` option):

* ``orthogonal`` (eq. 20): ``R = ||V^T V - I||_F^2 + ||U^T U - I||_F^2`` (FLoRA: every input-side factor -- ``V``
  and the kernel factors -- and ``U``);
* ``diagonal`` (eq. 21): ``R = ||V^T V - I||_F^2 + ||U^T U - diag(U^T U)||_F^2`` (``U``'s columns orthogonal with
  free norms);
* ``nonlinear`` (MPC_n, eq. 25): the branch computes ``s h(x V G^T) U^T`` (``h`` = ``mpc_nonlinearity``, GELU by
  default: smooth like the backbones' own MLP activation and without ReLU's dead half, which would halve the
  effective rank for any input). No weight form: not mergeable, only the ``branch`` route, Linear layers and
  FLoRA's dense convolutions (where the branch is factorised) only.

:func:`mpc_loss` is ``mpc_weight * mean over layers of R`` (float32), the loss term the OpenMMLab integration adds
to the training losses as ``loss_mpc``; it costs nothing where no layer has ``orthogonal`` / ``diagonal``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .base import AdapterLayer
from .config import AdapterConfig
from .methods import MPC_NONLINEARITIES

__all__ = ['BRANCH_OFFSETS', 'BRANCH_WIDTH_PER_RANK', 'LowRankLayer', 'init_factor', 'mpc_layers', 'mpc_loss',
           'mpc_penalty']

#: Under the ``cost_model`` route policy, ``route='auto'`` on a CPU takes the factorised branch for a layer of rank
#: ``r`` iff ``d_in * d_out / (d_in + d_out) >= BRANCH_WIDTH_PER_RANK * (r + BRANCH_OFFSETS[kind])``, ``kind`` being
#: ``'pointwise'`` (Linear, 1x1 convolution), ``'spatial'`` (k x k convolution, stride 1) or ``'strided'``
#: (patchify / downsampling convolution); see ``LowRankLayer._prefer_branch``.
BRANCH_WIDTH_PER_RANK = 1.2
BRANCH_OFFSETS = {'pointwise': 66, 'spatial': 26, 'strided': 196}


@torch.no_grad()
def init_factor(factor: Tensor, init: str) -> None:
    """A random factor ``[I_n, r_n]`` of FLoRA / TriLoRA, in place: ``kaiming`` (``kaiming_normal_(a=sqrt(3))``, as
    the FLoRA authors' reference code: entries ~ N(0, 1 / (2 r_n))), ``gaussian`` (N(0, 1)) or ``orthogonal``
    (orthonormal columns)."""
    if init == 'kaiming':
        nn.init.kaiming_normal_(factor, a=math.sqrt(3))
    elif init == 'gaussian':
        nn.init.normal_(factor)
    else:
        nn.init.orthogonal_(factor)


class _Penalty(torch.autograd.Function):
    """``R`` and its closed-form gradient, ``dR/dF = 4 F E`` with ``E = F^T F - target`` (symmetric, and zero on
    the diagonal for the ``diagonal`` form, whose diagonal does not enter ``R``), computed in float32 at forward.
    Backward needs no saved factor: under FSDP (``use_orig_params``) the factors are views of a flat parameter that
    is resharded after the layer's forward, and only the layer's forward sees them whole."""

    @staticmethod
    def forward(ctx, form: str, n_inputs: int, *factors: Tensor) -> Tensor:
        total = factors[0].new_zeros((), dtype=torch.float32)
        grads = []
        for i, factor in enumerate(factors):
            f = factor.detach().float()
            gram = f.t() @ f
            target = (torch.diag_embed(torch.diagonal(gram)) if i >= n_inputs and form == 'diagonal' else
                      torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
            error = gram - target
            total = total + error.square().sum()
            grads.append(4 * f @ error)
        ctx.grads = grads
        ctx.dtypes = [f.dtype for f in factors]
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, None, *((grad * g).to(dtype) for g, dtype in zip(ctx.grads, ctx.dtypes)))


def mpc_penalty(inputs: Iterable[Tensor], outputs: Iterable[Tensor], form: str) -> Tensor:
    """The MPC regulariser ``R`` of one layer from its factor matrices (columns = rank): ``orthogonal``
    ``sum ||F^T F - I||^2`` over all, ``diagonal`` the same over ``inputs`` plus ``sum ||F^T F - diag(F^T F)||^2``
    over ``outputs``. In float32 whatever the parameters' dtype or an enclosing autocast; differentiable."""
    inputs, outputs = list(inputs), list(outputs)
    with torch.autocast('cuda', enabled=False), torch.autocast('cpu', enabled=False):
        return _Penalty.apply(form, len(inputs), *inputs, *outputs)


class LowRankLayer(AdapterLayer):
    """Mixin of the factorised methods: ``scale``, the factors by role (:attr:`ROLE_KEYS`), the width rule of the
    ``cost_model`` route policy and the MPC options (module docstring)."""

    scale: float
    mpc: str | None
    mpc_weight: float
    #: role -> name (state-dict key) of the parameter holding it: ``factor_out`` U, ``factor_in`` V, ``core`` G
    ROLE_KEYS: dict[str, str] = {}
    #: roles whose parameter holds the factor transposed (LoRA's ``lora_A = V^T``)
    TRANSPOSED_ROLES: frozenset[str] = frozenset()

    def _init_low_rank(self, cfg: AdapterConfig) -> None:
        """The options every factorised method reads; called first by each ``_init_adapter``."""
        self.scale = cfg.scale
        self.mpc, self.mpc_weight = cfg.mpc, cfg.mpc_weight
        self._act = MPC_NONLINEARITIES[cfg.mpc_nonlinearity] if cfg.mpc == 'nonlinear' else None
        if self._act is not None and not self._supports_branch():
            raise ValueError(f"{type(self).__name__} {self._describe()}: mpc='nonlinear' puts the activation between "
                             f'the factors of a factorised branch, which this layer does not have (Linear layers; '
                             f"FLoRA's dense convolutions). Restrict the adapter, e.g. targets=['linear']")

    @property
    def mergeable(self) -> bool:
        return self.mpc != 'nonlinear'

    def _not_mergeable(self) -> str:
        return ("mpc='nonlinear' (MPC_n) puts an activation between the factors, so the update depends on the input "
                'and has no weight form to fold in')

    def _role(self, role: str) -> Tensor | None:
        key = self.ROLE_KEYS.get(role)
        if key is None:
            return None
        tensor = getattr(self, key)
        return tensor.t() if role in self.TRANSPOSED_ROLES else tensor

    @property
    def factor_out(self) -> Tensor:
        """``U``: the output-mode factor, ``[d_out (x k for loralib's conv LoRA), r]``."""
        return self._role('factor_out')

    @property
    def factor_in(self) -> Tensor:
        """``V``: the input-mode factor, ``[d_in / groups (x k...), r]`` (a view where stored transposed)."""
        return self._role('factor_in')

    @property
    def core(self) -> Tensor | None:
        """``G``: the core, or None where the method has none (LoRA: ``G = I``)."""
        return self._role('core')

    @property
    def kernel_factors(self) -> list[Tensor]:
        """The factors of a convolution's spatial modes (FLoRA); none for the matrix methods."""
        return []

    def mpc_penalty(self) -> Tensor | None:
        """This layer's MPC regulariser ``R`` (unweighted), or None without ``orthogonal`` / ``diagonal``."""
        if self.mpc not in ('orthogonal', 'diagonal'):
            return None
        return mpc_penalty([self.factor_in, *self.kernel_factors], [self.factor_out], self.mpc)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.mpc in ('orthogonal', 'diagonal') and torch.is_grad_enabled():
            # the regulariser of this step, from the factors as this forward sees them (FSDP: unsharded);
            # mpc_loss() collects it
            self._mpc_term = self.mpc_penalty()
        return super().forward(x)

    def _branch_rank(self) -> int:
        """The width of the ``branch`` route's low-rank products."""
        raise NotImplementedError

    def _signature(self) -> tuple:
        return (self._branch_rank() if self._supports_branch() else None, self.mpc)

    def _prefer_branch(self, device_type: str) -> bool:
        """The ``cost_model`` policy's choice between ``branch`` and ``merged``, a rule per device type.

        CPU (fitted on a 2-core CPU): per input row, ``merged`` adds the weight-gradient GEMM of ``op``
        (``d_in * d_out`` multiply-adds); ``branch`` adds six skinny products of width ``r`` plus fixed passes over
        the row, a cost ``~(d_in + d_out) (r + c)``. So the branch pays off once the width
        ``d_in d_out / (d_in + d_out)`` (``d_in`` = input channels / groups x kernel size) reaches
        ``BRANCH_WIDTH_PER_RANK * (r + c)``, with ``c`` per layer kind (``BRANCH_OFFSETS``). The measurements the
        constants were fitted to are in docs/benchmarks.md ("Per-layer route choice").

        CUDA and other accelerators (fitted on the H200 runs in ``results/gpu/``, docs/benchmarks.md "GPU"):
        ``merged``. Measured per layer, every one of ConvNeXt-V2-L's 112 adapted layers was fastest merged for LoRA
        and FLoRA, and the step got faster than with the CPU rule (LoRA 193.2 -> 186.0 ms, FLoRA 205.9 -> 192.6
        ms); on InternViT-6B all-merged LoRA (364-396 ms) beat all-branch LoRA (460 ms), while FLoRA all-branch
        (359 ms) beat all-merged (401 ms) in one sitting of a GPU whose run-to-run noise there was ~15%: pin
        ``route='branch'`` for FLoRA on InternViT-6B where its step time matters.
        """
        if not self.mergeable:
            return True
        if not self._supports_branch() or device_type != 'cpu':
            return False
        d_out, d_in = self.weight.shape[0], self.weight[0].numel()
        kind = ('strided' if max(getattr(self, 'stride', (1, ))) > 1 else
                'spatial' if self.weight[0, 0].numel() > 1 else 'pointwise')
        return d_in * d_out / (d_in + d_out) >= BRANCH_WIDTH_PER_RANK * (self._branch_rank() + BRANCH_OFFSETS[kind])

    def extra_repr(self) -> str:
        return super().extra_repr() + f', scale={self.scale:g}' + (f', mpc={self.mpc}' if self.mpc else '')


def mpc_layers(model: nn.Module) -> list[LowRankLayer]:
    """The layers of ``model`` with ``mpc='orthogonal'`` / ``'diagonal'``."""
    return [m for m in model.modules() if isinstance(m, LowRankLayer) and m.mpc in ('orthogonal', 'diagonal')]


def mpc_loss(model: nn.Module, layers: list[LowRankLayer] | None = None) -> Tensor | None:
    """``mpc_weight * mean over layers of R`` over the MPC layers of ``model`` (or the given ``layers``; float32),
    or None if there are none: add it to the training loss. A layer's ``R`` of the last training forward is taken
    (and consumed) where there is one, else computed now."""
    layers = mpc_layers(model) if layers is None else layers
    if not layers:
        return None
    terms = []
    for layer in layers:
        term = layer.__dict__.pop('_mpc_term', None)
        terms.append(layer.mpc_weight * (layer.mpc_penalty() if term is None else term))
    return sum(terms) / len(terms)

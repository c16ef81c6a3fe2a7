"""ConvNeXt-V2 backbone for mmdet / mmseg / mmrotate, built on timm's ConvNeXt.

Paper: Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders", CVPR 2023.
Weights licence: the official ConvNeXt-V2 checkpoints (facebookresearch/ConvNeXt-V2, and timm's copies of them)
are released under CC-BY-NC 4.0 -- non-commercial use only. No weights are shipped with flora_mm.

The module keeps timm's parameter names (``stem.0.weight``, ``stages.2.blocks.5.conv_dw.weight``,
``stages.2.blocks.5.mlp.fc1.weight``...) with the official architecture (Linear point-wise MLP with GRN, no layer
scale) for every size. :func:`checkpoint_filter_fn` converts the official dense and FCMAE (sparse pre-training)
checkpoints to these names; adapters never change them, so the same checkpoint loads with or without adapters.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from timm.layers.grn import GlobalResponseNorm
from timm.models.convnext import ConvNeXt
from torch import Tensor, nn

from .builder import attach_adapter
from .checkpoint import PretrainedMixin, unwrap_state_dict
from .stages import FrozenStagesMixin, arch_settings, check_out_indices

__all__ = ['ConvNeXtV2', 'checkpoint_filter_fn', 'ARCH_SETTINGS']

#: depths and widths of the ConvNeXt-V2 family (timm's ``convnextv2_*``).
ARCH_SETTINGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    'atto': ((2, 2, 6, 2), (40, 80, 160, 320)),
    'femto': ((2, 2, 6, 2), (48, 96, 192, 384)),
    'pico': ((2, 2, 6, 2), (64, 128, 256, 512)),
    'nano': ((2, 2, 8, 2), (80, 160, 320, 640)),
    'tiny': ((3, 3, 9, 3), (96, 192, 384, 768)),
    'small': ((3, 3, 27, 3), (96, 192, 384, 768)),
    'base': ((3, 3, 27, 3), (128, 256, 512, 1024)),
    'large': ((3, 3, 27, 3), (192, 384, 768, 1536)),
    'huge': ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}

_DROP_FCMAE = re.compile(r'^(decoder|mask_token|proj|pred)')


def _fcmae_to_dense(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """FCMAE pre-training checkpoints (MinkowskiEngine encoder) -> official dense names.

    ``encoder.`` prefix dropped (decoder / mask token / prediction keys discarded), Minkowski ``kernel`` tensors
    (``[k*k, in, out]`` dense, ``[k*k, C]`` depthwise) turned into conv weights, ``ln`` / ``linear`` wrappers
    removed from the names, GRN parameters flattened.
    """
    out = {}
    for key, value in state_dict.items():
        if not key.startswith('encoder.'):
            if _DROP_FCMAE.match(key):
                continue
            out[key] = value
            continue
        key = key[len('encoder.'):]
        if key.endswith('.kernel'):
            key = key[:-len('kernel')] + 'weight'
            if value.dim() == 3:  # [k*k, in, out] -> [out, in, k, k]
                kk, c_in, c_out = value.shape
                k = math.isqrt(kk)
                value = value.permute(2, 1, 0).reshape(c_out, c_in, k, k).transpose(3, 2)
            else:  # depthwise [k*k, C] -> [C, 1, k, k]
                kk, channels = value.shape
                k = math.isqrt(kk)
                value = value.permute(1, 0).reshape(channels, 1, k, k).transpose(3, 2)
        parts = key.split('.')
        if len(parts) > 2 and parts[-2] in ('ln', 'linear'):
            key = '.'.join(parts[:-2] + parts[-1:])
        out[key] = value
    return out


def _official_to_timm(key: str) -> str:
    key = re.sub(r'^downsample_layers\.0\.', 'stem.', key)
    key = re.sub(r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.', key)
    key = re.sub(r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.', key)
    key = key.replace('.dwconv.', '.conv_dw.').replace('.pwconv', '.mlp.fc')
    key = key.replace('.grn.gamma', '.mlp.grn.weight').replace('.grn.beta', '.mlp.grn.bias')
    return key


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Convert a ConvNeXt-V2 checkpoint to :class:`ConvNeXtV2`'s (timm's) parameter names. Pure function.

    Accepts timm state dicts (``stem.*``, ``stages.*``; ``conv_mlp`` variants with ``[out, in, 1, 1]`` MLP
    weights too), official dense checkpoints (``downsample_layers.*``, ``stages.N.M.dwconv`` ...) and official
    FCMAE pre-training checkpoints (``encoder.*`` with sparse kernels), wrapped or not in ``model`` /
    ``state_dict`` / ``module`` and with ``module.`` / ``backbone.`` prefixes (a trained mm detector or segmentor:
    its neck and head keys are dropped, see :func:`~flora_mm.models.checkpoint.unwrap_state_dict`). The
    classifier (``head.*``, final ``norm.*``) is dropped. Tensors are reshaped to the model's shapes where only
    singleton dimensions differ (GRN ``[1, 1, 1, C]`` vs ``[C]``, 1x1-conv vs Linear MLP weights).
    """
    state = unwrap_state_dict(state_dict)
    if any(k.startswith('encoder.') for k in state):
        state = _fcmae_to_dense(state)
    target = model.state_dict()
    out = {}
    for key, value in state.items():
        key = _official_to_timm(key)
        if key.startswith(('head.', 'norm.', 'norm_pre.')):
            continue
        ref = target.get(key)
        if ref is not None and ref.shape != value.shape and ref.numel() == value.numel():
            value = value.reshape(ref.shape)
        out[key] = value
    return out


@MODELS.register_module()
class ConvNeXtV2(PretrainedMixin, FrozenStagesMixin, BaseModule):
    """ConvNeXt-V2 backbone returning multi-scale NCHW features, with optional adapters.

    Args:
        arch: A key of :data:`ARCH_SETTINGS` (``'atto'`` ... ``'huge'``) or ``dict(depths=..., dims=...)``.
        in_channels: Input image channels.
        out_indices: Stages (0-3) whose outputs are returned.
        drop_path_rate: Stochastic depth rate, increasing linearly over the blocks.
        with_cp: Activation checkpointing per block (non-reentrant, so adapters get gradients even when the
            input does not require grad).
        frozen_stages: Freeze the stem and stages ``0 .. frozen_stages - 1`` (-1 / 0: nothing); frozen stages get
            no adapters and stay in eval mode.
        norm_out: Add a LayerNorm (``norm{i}``) on every returned feature, as mm's ConvNeXt does. These are new
            layers: they stay trainable when adapters are injected.
        adapter: Adapter config (``dict(type='FLoRA', ...)``, see :class:`flora_mm.adapters.AdapterConfig`);
            injected at construction, freezing every pretrained parameter.
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` loads any format accepted
            by :func:`checkpoint_filter_fn` and raises if keys do not fit.
    """

    checkpoint_filter = staticmethod(checkpoint_filter_fn)
    #: its own normalisation layers, for the adapter's ``train_norm`` (besides torch's LayerNorm): the global
    #: response normalisation of every block's MLP
    norm_types = (GlobalResponseNorm, )

    def __init__(self,
                 arch: str | dict = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_out: bool = True,
                 adapter: dict | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        settings = arch_settings('ConvNeXtV2', arch, ARCH_SETTINGS)
        depths, dims = (settings if isinstance(arch, str) else
                        (tuple(settings['depths']), tuple(settings['dims'])))
        self.out_indices = check_out_indices(out_indices, len(depths), f'{len(depths)} stages')
        self.depths, self.dims = depths, dims
        self.with_cp = with_cp
        self.frozen_stages = frozen_stages
        net = ConvNeXt(in_chans=in_channels, num_classes=0, depths=depths, dims=dims, use_grn=True,
                       ls_init_value=None, conv_mlp=False, drop_path_rate=drop_path_rate)
        self.stem = net.stem
        self.stages = net.stages
        self.new_layer_names = []
        if norm_out:
            for i in self.out_indices:
                self.add_module(f'norm{i}', LayerNorm2d(dims[i], eps=1e-6))
                self.new_layer_names.append(f'norm{i}')
        self._freeze_stages()
        if adapter is not None:
            attach_adapter(self, adapter)

    @property
    def out_channels(self) -> list[int]:
        return [self.dims[i] for i in self.out_indices]

    def extra_repr(self) -> str:
        return f'depths={self.depths}, dims={self.dims}'

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages <= 0:
            return []
        return [self.stem, *self.stages[:self.frozen_stages]]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage.downsample(x)
            for block in stage.blocks:
                if self.with_cp and self.training and torch.is_grad_enabled():
                    x = cp.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}', None)
                outs.append(norm(x) if norm is not None else x)
        # timm's LayerNorm2d permutes, so the features come out channels-last in memory; mmcv's RoIAlign (CPU and
        # CUDA) indexes its input as contiguous NCHW and reads such tensors wrongly. Return plain NCHW.
        return tuple(out.contiguous() for out in outs)

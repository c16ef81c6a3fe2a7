"""InternViT backbone (mmengine-native) for dense prediction, with optional adapters.

Paper: Chen et al., "InternVL: Scaling up Vision Foundation Models and Aligning for Generic Visual-Linguistic
Tasks", CVPR 2024. Weights licence: the InternViT checkpoints (OpenGVLab, Hugging Face ``OpenGVLab/InternViT-*``
and ``OpenGVLab/InternVL``) are released under the MIT licence. No weights are shipped with flora_mm.

Architecture: patch embedding (conv, patch 14), a class token and learned absolute position embeddings, then
pre-norm transformer blocks ``x + ls1 * attn(norm1(x))``, ``x + ls2 * mlp(norm2(x))`` with RMSNorm (6B) or
LayerNorm (300M), optional QK-RMSNorm over the full width, no qkv bias (6B), GELU MLP. For UperNet, the outputs
of four blocks are reshaped to maps (stride 14) and turned into a simple feature pyramid (x4, x2, x1, x0.5), as
in InternVL's segmentation code.

Parameter names follow the InternVL mm code (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma`` ...); :func:`checkpoint_filter_fn` also reads the Hugging Face
naming (``embeddings.*``, ``encoder.layers.N.*``, optionally under ``vision_model.``), from ``.pth`` or
``.safetensors``, and interpolates position embeddings to the model's grid.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import DropPath, LayerNorm2d
from torch import Tensor, nn

from .builder import attach_adapter
from .checkpoint import PretrainedMixin, unwrap_state_dict
from .stages import FrozenStagesMixin, arch_settings, check_out_indices

__all__ = ['InternViT', 'checkpoint_filter_fn', 'ARCH_SETTINGS', 'RMSNorm']

_6B = dict(embed_dim=3200, num_heads=25, mlp_dim=12800, norm='rms', qkv_bias=False, qk_norm=True)
#: Sizes of the InternViT family, by release. ``norm``: 'rms' or 'ln'. The 6B releases from 448px-V1-2 on have
#: 45 blocks (the last three of the 48-block model were dropped at release); ``out_indices`` default to four
#: evenly spaced blocks of whatever depth (48: 11, 23, 35, 47; 45: 10, 21, 32, 44). Which file fits which arch:
#: docs/checkpoints.md.
ARCH_SETTINGS: dict[str, dict] = {
    '6b': dict(_6B, depth=48),  # InternViT-6B-224px, InternViT-6B-448px-V1-0
    '6b-448px-v1.2': dict(_6B, depth=45),
    '6b-448px-v1.5': dict(_6B, depth=45),
    '6b-448px-v2.5': dict(_6B, depth=45),
    '300m': dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096, norm='ln', qkv_bias=True, qk_norm=False),
}


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (bf16-safe), weight applied in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, ), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma.to(x.dtype)


def _norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == 'rms' else nn.LayerNorm(dim, eps=1e-6)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, norm: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = _norm(norm, dim) if qk_norm else nn.Identity()
        self.k_norm = _norm(norm, dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)  # QK-norm over the full width, as InternViT
        q, k, v = (t.view(b, n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, norm: str, qkv_bias: bool, qk_norm: bool,
                 init_value: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = _norm(norm, dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, norm)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = _norm(norm, dim)
        self.mlp = Mlp(dim, mlp_dim)
        self.ls2 = LayerScale(dim, init_value)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bicubic interpolation of ``[1, 1 + h*w, C]`` (class token first, square source grid) to ``grid``."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    src = math.isqrt(patch_pos.shape[1])
    if src * src != patch_pos.shape[1]:
        raise ValueError(f'position embedding with {patch_pos.shape[1]} patch tokens is not a square grid')
    if (src, src) == tuple(grid):
        return pos_embed
    maps = patch_pos.reshape(1, src, src, -1).permute(0, 3, 1, 2).float()
    maps = F.interpolate(maps, size=grid, mode='bicubic', align_corners=False)
    patch_pos = maps.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


_KEY_RULES = [
    (r'^embeddings\.class_embedding$', 'cls_token'),
    (r'^embeddings\.position_embedding$', 'pos_embed'),
    (r'^embeddings\.patch_embedding\.', 'patch_embed.proj.'),
    (r'^encoder\.layers\.(\d+)\.ls([12])$', r'blocks.\1.ls\2.gamma'),
    (r'^encoder\.layers\.(\d+)\.', r'blocks.\1.'),
    (r'^up2\.0\.', 'up2.'),  # trained InternVL mmseg models: up2 = Sequential(ConvTranspose2d, Identity)
]


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: 'InternViT') -> dict[str, Tensor]:
    """Convert an InternViT checkpoint (InternVL mm naming or Hugging Face naming) to :class:`InternViT` names.

    Pure function: unwraps containers and ``module.`` / ``backbone.`` / ``vision_model.`` prefixes
    (:func:`~flora_mm.models.checkpoint.unwrap_state_dict`: a trained mm segmentor's heads or an InternVL chat
    model's language model are dropped), maps Hugging Face names and a trained InternVL mmseg model's
    ``up2.0.*``, drops keys the backbone has no use for (``clip_projector``, ``head``, ``norm`` of the
    classifier), refuses a checkpoint with another number of blocks (naming the arch that fits), and
    interpolates ``pos_embed`` to the model's patch grid.
    """
    state = unwrap_state_dict(state_dict)
    out = {}
    for key, value in state.items():
        for pattern, repl in _KEY_RULES:
            key = re.sub(pattern, repl, key)
        if key.startswith(('clip_projector', 'head.', 'fc_norm', 'norm.')):
            continue
        out[key] = value
    depth = len({int(m.group(1)) for k in out for m in [re.match(r'blocks\.(\d+)\.', k)] if m})
    if depth and depth != model.depth:
        fits = sorted(name for name, arch in ARCH_SETTINGS.items() if arch['depth'] == depth)
        raise KeyError(f'the checkpoint has {depth} transformer blocks, the model {model.depth}: use '
                       f'{" / ".join(repr(f) for f in fits) or f"an arch dict with depth={depth}"} '
                       f'(see docs/checkpoints.md)')
    if 'pos_embed' in out:
        out['pos_embed'] = resize_pos_embed(out['pos_embed'], model.grid_size)
    return out


@MODELS.register_module()
class InternViT(PretrainedMixin, FrozenStagesMixin, BaseModule):
    """InternViT with a simple feature pyramid, for mmseg / mmdet heads, with optional adapters.

    Args:
        arch: ``'6b'`` (patch 14, width 3200, depth 48, 25 heads, MLP 12800, RMSNorm, QK-RMSNorm, no qkv bias,
            about 5.9B parameters: the 224px and 448px-V1-0 releases), ``'6b-448px-v1.2'`` / ``'-v1.5'`` /
            ``'-v2.5'`` (the same with 45 blocks), ``'300m'``, or a dict with ``embed_dim``, ``depth``, ``num_heads``,
            ``mlp_dim`` and optionally ``norm`` ('rms' / 'ln'), ``qkv_bias``, ``qk_norm``, ``out_indices``.
        img_size: Training resolution; position embeddings are sized (and checkpoints interpolated) for it.
            Other input sizes interpolate on the fly.
        patch_size: Patch size (14 for the released weights).
        in_channels: Input image channels.
        out_indices: Blocks whose outputs feed the pyramid (default: the arch's, evenly spaced).
        layer_scale_init: Initial value of the layer-scale parameters (0.1 in InternViT).
        drop_path_rate: Stochastic depth rate, increasing linearly over the blocks.
        with_cp: Non-reentrant activation checkpointing per block.
        with_fpn: Return four scales (x4, x2, x1, x0.5 of the stride-14 map) instead of four stride-14 maps.
        frozen_stages: Freeze (and keep in eval mode) the embeddings -- patch embedding, class token, position
            embeddings -- and blocks ``0 .. frozen_stages - 1``, as mmpretrain's ViTs: -1 (default) nothing, 0 the
            embeddings only, ``>= depth`` the whole transformer (the "Base" baseline). Frozen blocks get no
            adapter. The pyramid layers are new and stay trainable.
        frozen: Deprecated spelling of ``frozen_stages=depth``.
        adapter: Adapter config; injected into the transformer (patch embedding and blocks), freezing it. The
            pyramid layers are new and stay trainable.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` (``.pth`` or ``.safetensors``) or another mmengine
            init config.
    """

    checkpoint_filter = staticmethod(checkpoint_filter_fn)
    #: its own normalisation layers, for the adapter's ``train_norm`` (besides torch's LayerNorm)
    norm_types = (RMSNorm, )

    def __init__(self,
                 arch: str | dict = '6b',
                 img_size: int = 224,
                 patch_size: int = 14,
                 in_channels: int = 3,
                 out_indices: Sequence[int] | None = None,
                 layer_scale_init: float = 0.1,
                 drop_path_rate: float = 0.0,
                 with_cp: bool = False,
                 with_fpn: bool = True,
                 frozen_stages: int = -1,
                 frozen: bool = False,
                 adapter: dict | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = arch_settings('InternViT', arch, ARCH_SETTINGS)
        settings = dict(norm='rms', qkv_bias=False, qk_norm=True, out_indices=None)
        settings.update(arch)
        dim, depth = settings['embed_dim'], settings['depth']
        if out_indices is None:
            out_indices = settings['out_indices'] or tuple(depth * (i + 1) // 4 - 1 for i in range(4))
        out_indices = check_out_indices(out_indices, depth, f'depth {depth}')
        self.embed_dim, self.depth = dim, depth
        self.patch_size = patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, settings['num_heads'], settings['mlp_dim'], settings['norm'], settings['qkv_bias'],
                  settings['qk_norm'], layer_scale_init, rates[i]) for i in range(depth))
        new_layers = []
        if with_fpn:
            self.up1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), LayerNorm2d(dim), nn.GELU(),
                                     nn.ConvTranspose2d(dim, dim, 2, 2))
            self.up2 = nn.ConvTranspose2d(dim, dim, 2, 2)
            self.up4 = nn.MaxPool2d(2)
            new_layers = ['up1', 'up2']
        self.with_fpn = with_fpn
        self.new_layer_names = new_layers
        self.frozen_stages = depth if frozen else frozen_stages
        self._default_init()
        self._freeze_stages()
        if adapter is not None:
            attach_adapter(self, adapter)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, *self.blocks[:self.frozen_stages]]

    def _frozen_parameters(self) -> list[nn.Parameter]:
        return [self.cls_token, self.pos_embed] if self.frozen_stages >= 0 else []

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * 4

    def extra_repr(self) -> str:
        return f'embed_dim={self.embed_dim}, depth={self.depth}'

    @torch.no_grad()
    def _default_init(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed if (h, w) == self.grid_size else resize_pos_embed(self.pos_embed, (h, w))
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1) + pos.to(x.dtype)
        maps = []
        for i, block in enumerate(self.blocks):
            if self.with_cp and self.training and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in self.out_indices:
                maps.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w))
        if self.with_fpn:
            maps = [self.up1(maps[0]), self.up2(maps[1]), maps[2], self.up4(maps[3])]
        # the token-to-map reshape is a channels-last view; mmcv's ops index inputs as contiguous NCHW
        return tuple(m.contiguous() for m in maps)

"""Pretrain a small ConvNeXt-V2 on the synthetic *source* domain: the demo's and the reproduction's base model.

No pretrained weights can be downloaded here, and adapting a frozen random network demonstrates nothing, so we
pretrain our own: ConvNeXt-V2 (default ``atto``) segmenting which of eight shapes
(:data:`flora_mm.data.SOURCE_SHAPES`) covers each stride-4 cell of images holding 1-3 shapes in random contrasting
colours on plain or gradient-and-noise backgrounds (:func:`flora_mm.data.source_scene`).

Why dense shape segmentation and not image classification: measured on 2 CPU cores, 450 steps of 8-way
classification left ConvNeXt-V2-atto at 15% held-out accuracy (chance 12.5%), while the same 450 steps of
shape segmentation reached 99.5% object-vs-background and 28% shape accuracy -- every image gives hundreds of
labels instead of one, and the features it needs (edges, corners, objectness at every stage) are the ones
detection and segmentation transfer. ConvNeXt-V2 itself is pretrained with a dense objective (FCMAE).

The head (a light FPN-like sum of 1x1 projections of all four stages, upsampled to stride 4) is thrown away.
Writes a timm-format state dict of the body (``stem.*``, ``stages.*``) that
``ConvNeXtV2(init_cfg=dict(type='Pretrained', checkpoint=PATH))`` loads through ``checkpoint_filter_fn``, and a
``.json`` next to it with the settings and the held-out source metrics. Deterministic: fixed seeds, data drawn
from ``numpy.random``.
"""
import json
import math
import time
from pathlib import Path


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flora_mm.data import SOURCE_SHAPES, source_scene
from flora_mm.models import ConvNeXtV2

__all__ = ['evaluate', 'pretrain', 'save_body', 'to_inputs']

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
STRIDE = 4


class ShapeSegmenter(nn.Module):
    """ConvNeXtV2 body + a light dense head predicting background / shape class at stride 4."""

    def __init__(self, arch: str, num_classes: int, width: int = 64):
        super().__init__()
        self.body = ConvNeXtV2(arch, out_indices=(0, 1, 2, 3), norm_out=False)
        self.lateral = nn.ModuleList(nn.Conv2d(dim, width, 1) for dim in self.body.dims)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        size = feats[0].shape[-2:]
        fused = sum(F.interpolate(lat(f), size=size, mode='bilinear', align_corners=False)
                    for f, lat in zip(feats, self.lateral))
        return self.classifier(F.gelu(fused))


def to_inputs(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image tensor and the label map sampled at the centre of every stride-4 cell."""
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - MEAN) / STD
    y = torch.from_numpy(labels)[:, STRIDE // 2::STRIDE, STRIDE // 2::STRIDE]
    return x, y


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 128) -> dict:
    """Held-out metrics: ``objectness_acc`` (object vs background per cell), ``shape_acc`` (correct class on
    object cells; chance 1/8) and ``miou`` over background + shapes."""
    model.eval()
    preds, targets = [], []
    for i in range(0, len(images), batch):
        x, y = to_inputs(images[i:i + batch], labels[i:i + batch])
        preds.append(model(x).argmax(1))
        targets.append(y)
    model.train()
    pred, target = torch.cat(preds), torch.cat(targets)
    fg = target > 0
    n = len(SOURCE_SHAPES) + 1
    conf = torch.bincount(target.flatten() * n + pred.flatten(), minlength=n * n).view(n, n).double()
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    iou = conf.diag()[union > 0] / union[union > 0]
    return dict(objectness_acc=((pred > 0) == fg).double().mean().item(),
                shape_acc=((pred == target) & fg).sum().item() / max(1, fg.sum().item()),
                miou=iou.mean().item())


def pretrain(out: Path, arch: str = 'atto', steps: int = 1500, batch: int = 64, img_size: int = 64,
             lr: float = 2e-3, seed: int = 0, log_every: int = 50, dtype: str = 'fp32') -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val_images, val_labels = source_scene(np.random.default_rng(seed + 1), 256, img_size)
    model = ShapeSegmenter(arch, len(SOURCE_SHAPES) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, min(50, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.time()
    for step in range(1, steps + 1):
        x, y = to_inputs(*source_scene(rng, batch, img_size))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            elapsed = time.time() - start
            print(f'pretrain [{step}/{steps}] loss {loss.item():.3f}  lr {sched.get_last_lr()[0]:.2e}  '
                  f'{elapsed:.0f}s elapsed, eta {elapsed / step * (steps - step):.0f}s', flush=True)
    metrics = evaluate(model, val_images, val_labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_body(model.body.state_dict(), out, dtype)
    info = dict(arch=arch, task='shape segmentation (stride 4)', steps=steps, batch=batch, img_size=img_size,
                lr=lr, seed=seed, dtype=dtype, classes=SOURCE_SHAPES, source_val=metrics,
                minutes=round((time.time() - start) / 60, 2), torch_threads=torch.get_num_threads())
    out.with_suffix('.json').write_text(json.dumps(info, indent=2))
    print(f'pretrained ConvNeXt-V2-{arch} on 256 held-out source images: objectness {metrics["objectness_acc"]:.3f}, '
          f'shape accuracy {metrics["shape_acc"]:.3f} (chance {1 / len(SOURCE_SHAPES):.3f}), '
          f'mIoU {metrics["miou"]:.3f}; saved to {out}')
    return info


def save_body(state: dict, out: Path, dtype: str = 'fp32') -> None:
    """Write the body's state dict, in ``dtype`` (``fp16`` halves the file: the shipped weights)."""
    cast = {'fp32': torch.float32, 'fp16': torch.float16}[dtype]
    torch.save({k: v.detach().to(cast).contiguous() for k, v in state.items()}, out)

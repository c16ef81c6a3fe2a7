"""The backbones hand the neck plain contiguous NCHW maps.

Regression: ConvNeXtV2's features (timm's LayerNorm2d permutes) and InternViT's token-to-map reshape came out
channels-last in memory, and mmcv's RoIAlign indexes its input as contiguous NCHW, so every RoI head (Mask R-CNN,
Oriented R-CNN) pooled wrong features and detection sat at the floor whatever the method.
"""
import pytest
import torch
from torchvision.ops import roi_align

from flora_mm.models import ConvNeXtV2, InternViT

BACKBONES = [
    ('convnextv2', lambda: ConvNeXtV2('atto')),
    ('convnextv2_flora', lambda: ConvNeXtV2('atto', adapter=dict(type='FLoRA', rank=2))),
    ('internvit_fpn', lambda: InternViT(dict(embed_dim=32, depth=4, num_heads=4, mlp_dim=64), img_size=64,
                                        patch_size=8, out_indices=(0, 1, 2, 3))),
    ('internvit_plain', lambda: InternViT(dict(embed_dim=32, depth=4, num_heads=4, mlp_dim=64), img_size=64,
                                          patch_size=8, out_indices=(1, 3), with_fpn=False)),
]


@pytest.mark.parametrize('name, build', BACKBONES, ids=[b[0] for b in BACKBONES])
def test_features_are_contiguous_nchw(name, build):
    torch.manual_seed(0)
    for mode in (True, False):
        feats = build().train(mode)(torch.randn(2, 3, 64, 64))
        assert all(f.is_contiguous() for f in feats), [f.stride() for f in feats]


def test_mmcv_roi_align_on_convnextv2_features_matches_torchvision():
    ops = pytest.importorskip('mmcv.ops')
    torch.manual_seed(0)
    feat = ConvNeXtV2('atto', out_indices=(0, ))(torch.randn(2, 3, 64, 64))[0]
    rois = torch.tensor([[0, 4., 6., 40., 30.], [1, 10., 2., 60., 50.], [1, 0., 0., 63., 63.]])
    got = ops.RoIAlign((7, 7), 0.25, 0, aligned=True)(feat, rois)
    torch.testing.assert_close(got, roi_align(feat, rois, (7, 7), 0.25, 0, aligned=True))

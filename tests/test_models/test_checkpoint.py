"""Real checkpoint files, built at tiny width with the upstream key names and shapes: trained mm detectors and
segmentors, DDP prefixes, official training files with ``args``, sharded Hugging Face weights, the 45-block
InternViT-6B releases, trained InternVL mmseg models; plus every released architecture's full-size key set,
on the meta device, against ours."""
import argparse
import json
from fractions import Fraction

import pytest
import torch

from flora_mm.models import ConvNeXtV2, InternViT
from flora_mm.models import convnextv2 as cnx
from flora_mm.models import internvit as ivit
from flora_mm.models.checkpoint import read_checkpoint
from tests.logcapture import logged

TINY_CNX = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
TINY_VIT = dict(embed_dim=8, depth=4, num_heads=2, mlp_dim=16)


# ----------------------------------------------------------------------------- upstream key names, by template
def official_convnextv2(depths, dims, head=True):
    """facebookresearch/ConvNeXt-V2 ``models/convnextv2.py`` parameter names and shapes (dense model)."""
    shapes = {'downsample_layers.0.0.weight': (dims[0], 3, 4, 4), 'downsample_layers.0.0.bias': (dims[0], ),
              'downsample_layers.0.1.weight': (dims[0], ), 'downsample_layers.0.1.bias': (dims[0], )}
    for i in range(1, 4):
        shapes.update({f'downsample_layers.{i}.0.weight': (dims[i - 1], ), f'downsample_layers.{i}.0.bias':
                       (dims[i - 1], ), f'downsample_layers.{i}.1.weight': (dims[i], dims[i - 1], 2, 2),
                       f'downsample_layers.{i}.1.bias': (dims[i], )})
    for i, (depth, c) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f'stages.{i}.{j}.'
            shapes.update({p + 'dwconv.weight': (c, 1, 7, 7), p + 'dwconv.bias': (c, ), p + 'norm.weight': (c, ),
                           p + 'norm.bias': (c, ), p + 'pwconv1.weight': (4 * c, c), p + 'pwconv1.bias': (4 * c, ),
                           p + 'grn.gamma': (1, 1, 1, 4 * c), p + 'grn.beta': (1, 1, 1, 4 * c),
                           p + 'pwconv2.weight': (c, 4 * c), p + 'pwconv2.bias': (c, )})
    if head:
        shapes.update({'norm.weight': (dims[-1], ), 'norm.bias': (dims[-1], ), 'head.weight': (1000, dims[-1]),
                       'head.bias': (1000, )})
    return shapes


def hf_internvit(width, depth, mlp, grid, rms=True):
    """Hugging Face ``OpenGVLab/InternViT-*`` (``modeling_intern_vit.py``) parameter names and shapes."""
    shapes = {'embeddings.class_embedding': (1, 1, width), 'embeddings.position_embedding': (1, 1 + grid**2, width),
              'embeddings.patch_embedding.weight': (width, 3, 14, 14), 'embeddings.patch_embedding.bias': (width, )}
    for i in range(depth):
        p = f'encoder.layers.{i}.'
        shapes.update({p + 'attn.qkv.weight': (3 * width, width), p + 'attn.proj.weight': (width, width),
                       p + 'attn.proj.bias': (width, ), p + 'mlp.fc1.weight': (mlp, width), p + 'mlp.fc1.bias': (mlp, ),
                       p + 'mlp.fc2.weight': (width, mlp), p + 'mlp.fc2.bias': (width, ), p + 'norm1.weight': (width, ),
                       p + 'norm2.weight': (width, ), p + 'ls1': (width, ), p + 'ls2': (width, )})
        if rms:  # 6B: RMSNorm, QK-RMSNorm, no qkv bias
            shapes.update({p + 'attn.q_norm.weight': (width, ), p + 'attn.k_norm.weight': (width, )})
        else:  # 300M: LayerNorm, qkv bias
            shapes.update({p + 'attn.qkv.bias': (3 * width, ), p + 'norm1.bias': (width, ),
                           p + 'norm2.bias': (width, )})
    return shapes


def internvl_mm(width, depth, mlp, grid):
    """InternVL's own ``intern_vit_6b_224px.pth`` naming (its mmseg ``InternViT6B``), with its CLIP projector."""
    shapes = {'cls_token': (1, 1, width), 'pos_embed': (1, 1 + grid**2, width),
              'patch_embed.proj.weight': (width, 3, 14, 14), 'patch_embed.proj.bias': (width, ),
              'clip_projector.norm1_q.weight': (width, )}
    for i in range(depth):
        p = f'blocks.{i}.'
        shapes.update({p + 'norm1.weight': (width, ), p + 'attn.qkv.weight': (3 * width, width),
                       p + 'attn.q_norm.weight': (width, ), p + 'attn.k_norm.weight': (width, ),
                       p + 'attn.proj.weight': (width, width), p + 'attn.proj.bias': (width, ),
                       p + 'ls1.gamma': (width, ), p + 'norm2.weight': (width, ), p + 'mlp.fc1.weight': (mlp, width),
                       p + 'mlp.fc1.bias': (mlp, ), p + 'mlp.fc2.weight': (width, mlp), p + 'mlp.fc2.bias': (width, ),
                       p + 'ls2.gamma': (width, )})
    return shapes


def materialise(shapes, device='cpu', seed=0):
    gen = torch.Generator().manual_seed(seed)
    if device == 'meta':
        return {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def base_shapes(model):
    skip = tuple(f'{n}.' for n in model.new_layer_names)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(skip)}


# -------------------------------------------------------------------------- released architectures, full size
@pytest.mark.parametrize('arch', list(cnx.ARCH_SETTINGS))
def test_every_convnextv2_release_maps_onto_our_keys(arch):
    depths, dims = cnx.ARCH_SETTINGS[arch]
    with torch.device('meta'):
        model = ConvNeXtV2(arch, norm_out=False)
    out = cnx.checkpoint_filter_fn(materialise(official_convnextv2(depths, dims), 'meta'), model)
    assert {k: tuple(v.shape) for k, v in out.items()} == base_shapes(model)


@pytest.mark.parametrize('arch, depth, source', [
    ('6b', 48, 'internvl_224px'), ('6b', 48, 'hf_448px'), ('6b-448px-v1.2', 45, 'hf_448px'),
    ('6b-448px-v1.5', 45, 'hf_448px'), ('6b-448px-v2.5', 45, 'hf_448px'), ('300m', 24, 'hf_448px_300m'),
])
def test_every_internvit_release_maps_onto_our_keys(arch, depth, source):
    settings = ivit.ARCH_SETTINGS[arch]
    width, mlp = settings['embed_dim'], settings['mlp_dim']
    shapes = (internvl_mm(width, depth, mlp, 16) if source == 'internvl_224px' else
              hf_internvit(width, depth, mlp, 32, rms=source != 'hf_448px_300m'))
    with torch.device('meta'):
        model = InternViT(arch, img_size=224 if source == 'internvl_224px' else 448, with_fpn=False)
    assert model.depth == depth
    assert model.out_indices == tuple(depth * (i + 1) // 4 - 1 for i in range(4))  # 11..47 or 10..44
    out = ivit.checkpoint_filter_fn(materialise(shapes, 'meta'), model)
    assert {k: tuple(v.shape) for k, v in out.items()} == base_shapes(model)


def test_45_block_release_into_the_48_block_arch_names_the_arch_that_fits():
    shapes = hf_internvit(3200, 45, 12800, 32)
    with torch.device('meta'):
        model = InternViT('6b', img_size=448, with_fpn=False)
    with pytest.raises(KeyError, match=r"45 transformer blocks, the model 48: use '6b-448px-v1.2' / "
                                       r"'6b-448px-v1.5' / '6b-448px-v2.5'"):
        ivit.checkpoint_filter_fn(materialise(shapes, 'meta'), model)


# ------------------------------------------------------------------------------------ files a user hands us
@pytest.mark.parametrize('prefix', ['backbone.', 'module.backbone.'])
def test_trained_detector_checkpoint_loads_its_backbone(tmp_path, prefix):
    """A trained Mask R-CNN file: backbone, neck and heads under ``state_dict`` (with DDP's ``module.`` too)."""
    torch.manual_seed(1)
    trained = ConvNeXtV2(TINY_CNX, norm_out=False)
    state = {prefix + k: v for k, v in trained.state_dict().items()}
    neck = {'neck.lateral_convs.0.conv.weight': torch.randn(4, 8, 1, 1), 'rpn_head.rpn_conv.weight':
            torch.randn(4, 4, 3, 3), 'roi_head.bbox_head.fc_cls.weight': torch.randn(3, 4)}
    state.update({prefix.replace('backbone.', '') + k: v for k, v in neck.items()})
    path = tmp_path / 'mask_rcnn.pth'
    torch.save({'meta': {'epoch': 12}, 'state_dict': state}, path)
    model = ConvNeXtV2(TINY_CNX, norm_out=False, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    _, messages = logged(model.init_weights)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    assert any('dropped 3 others: neck.* (1), roi_head.* (1), rpn_head.* (1)' in m for m in messages), messages
    # a detector whose backbone lacks a tensor still fails, naming it
    del state[prefix + 'stages.1.blocks.0.conv_dw.weight']
    torch.save({'state_dict': state}, path)
    with pytest.raises(KeyError, match=r"missing keys \(1\): \['stages.1.blocks.0.conv_dw.weight'\]"):
        model.init_weights()


def test_official_training_file_with_args_loads_and_other_objects_stay_refused(tmp_path):
    state = materialise(official_convnextv2(TINY_CNX['depths'], TINY_CNX['dims']))
    good = tmp_path / 'checkpoint-best.pth'
    args = argparse.Namespace(lr=8e-4, model='convnextv2_atto', input_size=224, layer_decay=0.9)
    torch.save({'model': state, 'epoch': 99, 'args': args}, good)
    model = ConvNeXtV2(TINY_CNX, norm_out=False, init_cfg=dict(type='Pretrained', checkpoint=str(good)))
    model.init_weights()
    torch.testing.assert_close(model.stages[2].blocks[1].mlp.fc1.weight, state['stages.2.1.pwconv1.weight'])
    bad = tmp_path / 'evil.pth'
    torch.save({'model': state, 'args': Fraction(1, 3)}, bad)
    with pytest.raises(Exception, match='Unsupported global|WeightsUnpickler'):
        read_checkpoint(str(bad))


def _hf_shards(tmp_path, state, n_shards=3):
    from safetensors.torch import save_file
    keys = sorted(state)
    weight_map = {}
    for s in range(n_shards):
        name = f'model-{s + 1:05d}-of-{n_shards:05d}.safetensors'
        part = {k: state[k].contiguous() for k in keys[s::n_shards]}
        save_file(part, str(tmp_path / name))
        weight_map.update({k: name for k in part})
    (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(dict(metadata={}, weight_map=weight_map)))
    return weight_map


def test_sharded_hugging_face_weights_load_by_folder_or_index(tmp_path, monkeypatch):
    from flora_mm.models import checkpoint
    state = materialise(hf_internvit(8, 4, 16, 4))
    state = {f'vision_model.{k}': v for k, v in state.items()}
    state['language_model.lm_head.weight'] = torch.randn(5, 8)  # an InternVL chat model: dropped
    _hf_shards(tmp_path, state)
    reads = []
    original = checkpoint._read_file
    monkeypatch.setattr(checkpoint, '_read_file', lambda p: reads.append(p) or original(p))
    for source in (tmp_path, tmp_path / 'model.safetensors.index.json'):
        model = InternViT(TINY_VIT, img_size=56, init_cfg=dict(type='Pretrained', checkpoint=str(source)))
        model.init_weights()
        expected = state['vision_model.encoder.layers.3.mlp.fc2.weight']
        torch.testing.assert_close(model.blocks[3].mlp.fc2.weight, expected)
    assert len(reads) == 6 and len(set(reads)) == 3  # each shard read once per load


def test_sharded_checkpoint_whose_index_does_not_match_its_shards_is_refused(tmp_path):
    state = materialise(hf_internvit(8, 4, 16, 4))
    weight_map = _hf_shards(tmp_path, state)
    key = 'encoder.layers.0.mlp.fc1.weight'
    shards = sorted(set(weight_map.values()))
    weight_map[key] = next(s for s in shards if s != weight_map[key])  # the index points to the wrong shard
    (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(dict(weight_map=weight_map)))
    with pytest.raises(KeyError, match='does not match model.safetensors.index.json'):
        read_checkpoint(str(tmp_path))


def test_trained_internvl_segmentor_loads_with_its_up2_sequential(tmp_path):
    """InternVL's mmseg ``InternViT6B`` stores ``up2`` as ``Sequential(ConvTranspose2d, Identity)``."""
    torch.manual_seed(3)
    trained = InternViT(TINY_VIT, img_size=56)
    state = {('backbone.' + k).replace('backbone.up2.', 'backbone.up2.0.'): v for k, v in trained.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.randn(150, 8, 1, 1)
    path = tmp_path / 'upernet_internvit.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    model = InternViT(TINY_VIT, img_size=56, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.up2.weight, trained.up2.weight)
    torch.testing.assert_close(model.up1[3].weight, trained.up1[3].weight)

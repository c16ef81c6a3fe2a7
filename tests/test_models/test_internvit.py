"""InternViT backbone: pyramid outputs, adapters, both checkpoint namings, position-embedding interpolation."""
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from flora_mm.adapters import adapted_layers, count_parameters
from flora_mm.models import InternViT
from flora_mm.models.internvit import resize_pos_embed

TINY = dict(embed_dim=32, depth=4, num_heads=4, mlp_dim=64)
ADAPTER = dict(type='FLoRA', rank=4, scale=0.04, targets=['linear'])


def make(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault('img_size', 56)
    return InternViT(TINY, **kw)


def test_pyramid_outputs_and_other_input_sizes():
    model = make()
    outs = model(torch.randn(2, 3, 56, 56))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    outs = model(torch.randn(1, 3, 42, 70))  # pos-embed interpolated on the fly
    assert tuple(outs[2].shape) == (1, 32, 3, 5)
    assert make(with_fpn=False)(torch.randn(1, 3, 56, 56))[0].shape[-1] == 4


def test_adapter_identity_freezing_and_new_layers_trainable():
    plain, x = make(), torch.randn(1, 3, 56, 56)
    adapted = make(adapter=ADAPTER)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    for a, b in zip(adapted(x), plain(x)):
        torch.testing.assert_close(a, b)
    names = [n for n, _ in adapted_layers(adapted)]
    assert {'blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.3.mlp.fc2'} <= set(names)
    trainable = {n.split('.')[0] for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {'blocks', 'up1', 'up2'}
    assert not adapted.pos_embed.requires_grad and not adapted.blocks[0].norm1.weight.requires_grad
    base = make(frozen=True)
    assert {n.split('.')[0] for n, p in base.named_parameters() if p.requires_grad} == {'up1', 'up2'}


@pytest.mark.parametrize('frozen_stages, frozen_blocks', [(-1, 0), (0, 0), (2, 2), (4, 4), (99, 4)])
def test_frozen_stages_freeze_embeddings_then_blocks_and_get_no_adapters(frozen_stages, frozen_blocks):
    """mmpretrain's ViT convention: 0 freezes the embeddings, k the embeddings and the first k blocks."""
    if frozen_blocks == 4:  # an adapter on a wholly frozen transformer has nothing to adapt: an error, not a no-op
        with pytest.raises(ValueError, match='no trainable layer'):
            make(adapter=ADAPTER, frozen_stages=frozen_stages)
        return
    model = make(adapter=ADAPTER, frozen_stages=frozen_stages)
    embeddings = [model.cls_token, model.pos_embed, *model.patch_embed.parameters()]
    assert all(not p.requires_grad for p in embeddings)  # pretrained, never trained (adapter or frozen)
    adapted = {n.split('.')[1] for n, _ in adapted_layers(model) if n.startswith('blocks.')}
    assert adapted == {str(i) for i in range(frozen_blocks, 4)}
    model.train()
    assert [b.training for b in model.blocks] == [False] * frozen_blocks + [True] * (4 - frozen_blocks)


def test_frozen_stages_without_adapter_is_the_base_baseline():
    for frozen_stages, frozen_blocks in ((-1, 0), (2, 2), (99, 4)):
        base = make(frozen_stages=frozen_stages)
        trainable_blocks = {n.split('.')[1] for n, p in base.named_parameters()
                            if p.requires_grad and n.startswith('blocks.')}
        assert trainable_blocks == {str(i) for i in range(frozen_blocks, 4)}
        assert base.cls_token.requires_grad == (frozen_stages < 0)
        assert all(p.requires_grad for n, p in base.named_parameters() if n.startswith(('up1.', 'up2.')))


def test_with_cp_and_bf16():
    model = make(adapter=ADAPTER, with_cp=True)
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = sum(o.float().mean() for o in model(torch.randn(1, 3, 56, 56)))
    out.backward()
    assert model.blocks[0].attn.qkv.flora_core.grad is not None
    model.to(torch.bfloat16)
    assert model(torch.randn(1, 3, 56, 56, dtype=torch.bfloat16))[0].dtype == torch.bfloat16


def _to_hf(state):
    rules = [(r'^cls_token$', 'embeddings.class_embedding'), (r'^pos_embed$', 'embeddings.position_embedding'),
             (r'^patch_embed\.proj\.', 'embeddings.patch_embedding.'),
             (r'^blocks\.(\d+)\.ls([12])\.gamma$', r'encoder.layers.\1.ls\2'), (r'^blocks\.(\d+)\.', r'encoder.layers.\1.')]
    out = {}
    for k, v in state.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v.contiguous()
    return out


@pytest.mark.parametrize('naming', ['mm', 'mm_module', 'hf_safetensors', 'hf_vision_model_pth'])
def test_pretrained_loading_both_namings_with_pos_embed_interpolation(naming, tmp_path):
    source = {k: v for k, v in make(seed=5, img_size=42, with_fpn=False).state_dict().items()}  # 3x3 grid
    if naming == 'mm':
        path = tmp_path / 'w.pth'
        torch.save(source, path)
    elif naming == 'mm_module':
        path = tmp_path / 'w.pth'
        torch.save({'module': source}, path)
    elif naming == 'hf_safetensors':
        path = tmp_path / 'model.safetensors'
        save_file(_to_hf(source), str(path))
    else:
        path = tmp_path / 'w.pth'
        torch.save({f'vision_model.{k}': v for k, v in _to_hf(source).items()} | {'mlp1.0.weight': torch.ones(1)},
                   path)
    model = make(adapter=ADAPTER, init_cfg=dict(type='Pretrained', checkpoint=str(path)))  # 4x4 grid
    model.init_weights()
    own = model.state_dict()
    torch.testing.assert_close(own['blocks.2.attn.qkv.weight'], source['blocks.2.attn.qkv.weight'])
    torch.testing.assert_close(own['blocks.1.ls2.gamma'], source['blocks.1.ls2.gamma'])
    torch.testing.assert_close(own['pos_embed'], resize_pos_embed(source['pos_embed'], (4, 4)))
    assert own['pos_embed'].shape == (1, 17, 32)
    assert not own['blocks.0.attn.qkv.flora_core'].any()


@pytest.mark.parametrize('grid', [(3, 5), (5, 3), (6, 6)])
def test_resize_pos_embed_keeps_rows_and_columns_apart(grid):
    """Channel 0 ramps down the rows, channel 1 along the columns of a 4 x 4 source grid. Tokens are row-major, so
    after resizing to ``grid = (h, w)`` channel 0 must depend on the token's row only and channel 1 on its column
    only, and both must equal ``F.interpolate`` of the source maps."""
    rows, cols = torch.meshgrid(torch.arange(4.), torch.arange(4.), indexing='ij')
    maps = torch.stack([rows, cols, rows * cols])  # [3, 4, 4]
    cls = torch.full((1, 1, 3), 7.0)
    pos = torch.cat([cls, maps.flatten(1).t()[None]], dim=1)  # [1, 1 + 16, 3], row-major tokens
    out = resize_pos_embed(pos, grid)
    h, w = grid
    assert out.shape == (1, 1 + h * w, 3) and torch.equal(out[:, :1], cls)
    tokens = out[0, 1:].t().reshape(3, h, w)
    assert torch.allclose(tokens[0], tokens[0, :, :1].expand(h, w))  # row ramp: constant along each row
    assert torch.allclose(tokens[1], tokens[1, :1, :].expand(h, w))  # column ramp: constant down each column
    assert tokens[0, -1, 0] > tokens[0, 0, 0] and tokens[1, 0, -1] > tokens[1, 0, 0]
    expected = F.interpolate(maps[None], size=grid, mode='bicubic', align_corners=False)[0]
    torch.testing.assert_close(tokens, expected)


def test_bad_checkpoint_raises():
    state = make(with_fpn=False).state_dict()
    state.pop('blocks.1.mlp.fc1.weight')
    with pytest.raises(KeyError, match=r"missing keys \(1\): \['blocks.1.mlp.fc1.weight'\]"):
        make().load_pretrained(state)


def test_6b_on_meta_device():
    with torch.device('meta'):
        model = InternViT('6b', img_size=224, with_fpn=False, adapter=dict(type='LoRA', rank=16, targets=['linear']))
    counts = count_parameters(model)
    base = counts['total'] - counts['adapter']
    assert 5.85e9 < base < 5.95e9
    # LoRA r=16 on qkv, proj, fc1, fc2 of 48 blocks: 16 * sum(d_in + d_out)
    assert counts['adapter'] == 48 * 16 * ((3200 + 9600) + (3200 + 3200) + (3200 + 12800) + (12800 + 3200))


def test_train_norm_trains_internvits_rmsnorms():
    """InternViT-6B's RMSNorm is a plain module, not a torch norm class: the backbone declares it, so
    ``train_norm=True`` trains every RMSNorm (block norms and QK norms) -- and nothing else of the base."""
    from flora_mm.models.internvit import RMSNorm
    plain = make()
    rms = {f'{n}.{p}' for n, m in plain.named_modules() if type(m) is RMSNorm for p, _ in m.named_parameters()}
    assert {'blocks.0.norm1.weight', 'blocks.0.attn.q_norm.weight'} <= rms
    model = make(adapter=dict(ADAPTER, train_norm=True))
    assert set(model.adapter_state.extra_trainable) == rms
    assert all(model.get_parameter(n).requires_grad for n in rms)
    without = make(adapter=ADAPTER)
    assert not without.adapter_state.extra_trainable

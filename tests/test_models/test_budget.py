"""Budget counting and the FLoRA rank solver on the real backbone sizes (meta device)."""
import pytest
from mmengine.registry import init_default_scope

import flora_mm.mm  # noqa: F401
from flora_mm.models.budget import adapter_budget, match_budget, solve_rank

CASES = {
    'convnextv2_large': (dict(type='ConvNeXtV2', arch='large'), dict(type='LoRA', rank=8),
                         dict(type='FLoRA', kernel_rank=2, scale=4.0), 42),
    'internvit_6b': (dict(type='InternViT', arch='6b', with_fpn=False), dict(type='LoRA', rank=16, targets=['linear']),
                     dict(type='FLoRA', targets=['linear'], scale=0.04), 16),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES)
def test_solver_matches_lora_budget_within_one_percent(case):
    init_default_scope('mmdet')
    backbone, lora, flora, expected_rank = CASES[case]
    target, _ = adapter_budget(backbone, lora)
    rank, budget = solve_rank(backbone, flora, target)
    assert rank == expected_rank
    assert abs(budget / target - 1) < 0.01
    assert budget == adapter_budget(backbone, {**flora, 'rank': rank})[0]


def test_solver_rejects_unreachable_targets():
    init_default_scope('mmdet')
    backbone = dict(type='ConvNeXtV2', arch=dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)))
    with pytest.raises(ValueError, match='cannot reach'):
        solve_rank(backbone, dict(type='FLoRA'), 10**9, max_rank=64)
    with pytest.raises(ValueError, match='positive'):
        solve_rank(backbone, dict(type='FLoRA'), 0)


def test_match_budget_picks_the_closest_rank_to_the_reference():
    """Against brute force: budgets of every FLoRA rank 1..24 on a tiny backbone, counted directly."""
    init_default_scope('mmdet')
    backbone = dict(type='ConvNeXtV2', arch=dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64)))
    flora, lora = dict(type='FLoRA', kernel_rank=2), dict(type='LoRA', rank=4)
    rank, budget, target = match_budget(backbone, flora, lora)
    assert target == adapter_budget(backbone, lora)[0]
    budgets = {r: adapter_budget(backbone, {**flora, 'rank': r})[0] for r in range(1, 25)}
    best = min(budgets, key=lambda r: abs(budgets[r] - target))
    assert (rank, budget) == (best, budgets[best])


@pytest.mark.parametrize('adapter', [dict(type='BitFit'), dict(type='LoRA', rank=2), dict(type='FLoRA', rank=3)])
def test_base_of_a_budget_is_the_plain_backbone(adapter):
    """The denominator of "% of backbone": the backbone without any adapter, counted directly -- BitFit's trained
    biases belong to it (they are not new parameters), an adapter's new tensors do not."""
    import torch
    from mmengine.registry import MODELS
    init_default_scope('mmdet')
    backbone = dict(type='ConvNeXtV2', arch=dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64)))
    with torch.device('meta'):
        plain = sum(p.numel() for p in MODELS.build(dict(backbone)).parameters())
    n, base = adapter_budget(backbone, adapter)
    assert base == plain and 0 < n < plain


@pytest.mark.slow
def test_readme_budget_table_is_what_the_tool_prints_now():
    """Every number of the README's budget table comes from tools/param_budget.py --readme (regenerate it there)."""
    from flora_mm import docblocks
    from flora_mm.models.budget import readme_budget_table
    from tests.test_configs.smoke import ROOT
    table = readme_budget_table(ROOT)
    assert docblocks.read_block(ROOT / 'README.md', 'tools/param_budget.py', 'budgets') == table


def test_readme_method_table_is_the_declarations():
    from flora_mm import docblocks
    from flora_mm.adapters.methods import method_table
    from tests.test_configs.smoke import ROOT
    assert docblocks.read_block(ROOT / 'README.md', 'tools/param_budget.py', 'methods') == method_table()

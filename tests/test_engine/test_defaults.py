"""flora_mm.engine.defaults: the shipped lr_mult of each method from the validation curves, against hand counts."""
import math
from pathlib import Path

import pytest

from flora_mm.adapters.methods import METHODS as DECLARED
from flora_mm.engine import comparison as C
from flora_mm.engine import defaults as D

from .test_comparison import _record

ROOT = Path(__file__).resolve().parents[2]
TASKS = ('coco', 'ade20k')  # to_percent 100 and 1: regrets are in points of each task's metric


def _curve(out, task, method, values):
    for mult, value in values.items():  # None: a failed run
        _record(out, mult, value, task=task, method=method, state='FAIL' if value is None else 'COMPLETE')


@pytest.fixture
def out(tmp_path):
    """Full selects x4 on coco and x16 on ade20k: relative x1 is abs x4 there, abs x16 here."""
    _curve(tmp_path, 'coco', 'full', {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4})
    _curve(tmp_path, 'ade20k', 'full', {0.0625: 10, 0.25: 20, 1: 30, 4: 40, 16: 50, 64: 45})
    return tmp_path


def test_the_default_moves_to_the_least_mean_regret_relative_to_full(out):
    # coco (x100): best 55 at abs x64 = rel x16; rel x1 (abs 4) 45 -> regret 10, rel x4 (abs 16) 5, rel x16 0
    _curve(out, 'coco', 'bitfit', {0.0625: .40, 0.25: .41, 1: .42, 4: .45, 16: .50, 64: .55, 256: .52})
    # ade20k: best 50 at abs x64 = rel x4; rel x1 (abs 16) 45 -> regret 5, rel x4 0, rel x16 (abs 256) 2
    _curve(out, 'ade20k', 'bitfit', {0.0625: 40, 0.25: 41, 1: 42, 4: 44, 16: 45, 64: 50, 256: 48})
    row = {r['method']: r for r in D.lr_mult_defaults(out, TASKS)}['BitFit']
    assert row['pending'] == [] and row['relative'] == {'coco': 16.0, 'ade20k': 4.0}
    # relative points both tasks ran: coco's x1/64..x64 and ade20k's x1/256..x16
    assert sorted(row['regret']) == [1 / 64, 1 / 16, 1 / 4, 1.0, 4.0, 16.0]
    assert row['regret'][1.0] == pytest.approx(7.5) and row['regret'][4.0] == pytest.approx(2.5)
    assert row['regret'][16.0] == pytest.approx(1.0)
    assert row['candidate'] == 16.0 and row['default'] == 16.0


@pytest.mark.parametrize('coco_at_rel1,default', [
    (.595, 1.0),   # mean regret at x1 (0.5 + 0.2) / 2 = 0.35: x1/4 saves 0.35 < MARGIN, x1 stays
    (.575, .25),   # (2.5 + 0.2) / 2 = 1.35: x1/4 saves 1.35 >= MARGIN, the default moves
])
def test_a_default_moves_only_when_it_saves_the_margin(out, coco_at_rel1, default):
    _curve(out, 'coco', 'lora', {0.0625: .5, 0.25: .55, 1: .60, 4: coco_at_rel1, 16: .50})   # best abs 1: rel x1/4
    _curve(out, 'ade20k', 'lora', {0.0625: 50, 0.25: 55, 1: 58, 4: 60, 16: 59.8})         # best abs 4: rel x1/4
    row = {r['method']: r for r in D.lr_mult_defaults(out, TASKS)}['LoRA']
    assert row['candidate'] == .25 and row['regret'][.25] == pytest.approx(0.0)
    assert row['regret'][1.0] == pytest.approx((100 * (.60 - coco_at_rel1) + 0.2) / 2)
    assert row['default'] == default


def test_a_failed_run_at_relative_x1_has_infinite_regret(out):
    _curve(out, 'coco', 'dora', {0.0625: .5, 0.25: .6, 1: .62, 4: None, 16: .3})   # abs 4 = rel x1 failed
    _curve(out, 'ade20k', 'dora', {0.0625: 50, 0.25: 55, 1: 58, 4: 60, 16: 59})
    row = {r['method']: r for r in D.lr_mult_defaults(out, TASKS)}['DoRA']
    assert math.isinf(row['regret'][1.0]) and row['default'] == row['candidate'] == .25


def test_an_open_grid_leaves_the_default_undecided(out):
    _curve(out, 'coco', 'flora', {0.0625: .5, 0.25: .6, 1: .62, 4: .6, 16: .3})
    _curve(out, 'ade20k', 'flora', {0.0625: 50, 0.25: 55})  # ade20k's grid is incomplete
    rows = {r['method']: r for r in D.lr_mult_defaults(out, TASKS)}
    assert rows['FLoRA']['pending'] == ['ade20k'] and rows['FLoRA']['default'] is None
    assert rows['SSB']['pending'] == list(TASKS)  # nothing ran
    assert '| `FLoRA` |' in D.defaults_table(out, TASKS) and 'open (ade20k)' in D.defaults_table(out, TASKS)


def test_every_source_is_a_study_method_of_its_declared_type():
    for name, method in D.SOURCES.items():
        assert C.METHODS[method]['adapter']['type'] == name and name in DECLARED


def test_declared_defaults_are_the_rule_on_the_committed_run_files():
    """Each method's ``lr_mult`` in its declaration is what the rule gives on results/tuned, once every task has
    selected; before that it stays 1 (a default moves on the evidence of all three tasks, not of some)."""
    for row in D.lr_mult_defaults(ROOT / 'results' / 'tuned'):
        expected = 1.0 if row['pending'] else row['default']
        assert DECLARED[row['method']].lr_mult == expected, row['method']


def test_the_comparison_page_shows_the_rule_on_the_run_files():
    from flora_mm import docblocks
    page = ROOT / 'docs' / 'tuned_comparison.md'
    assert docblocks.read_block(page, 'tools/tuned_study.py', 'defaults') == D.defaults_table(ROOT / 'results' /
                                                                                               'tuned') + '\n'

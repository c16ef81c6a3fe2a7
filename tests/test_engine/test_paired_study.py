"""flora_mm.engine.paired_study (the untuned study behind tools/reproduce.py): paired differences and t intervals
from run files, Holm's family over the design, the report blocks, the run plan."""
import json

import pytest

from flora_mm.engine import paired_study as study
from tests.test_configs.smoke import ROOT


def _write(out, task, method, seed, value, repeat=0, minutes=1.0):
    runs = out / 'runs' / task
    runs.mkdir(parents=True, exist_ok=True)
    name = f'{method}_s{seed}' + (f'_r{repeat}' if repeat else '')
    (runs / f'{name}.json').write_text(json.dumps(dict(
        task=task, method=method, seed=seed, repeat=repeat, budget=dict(backbone_trainable=10, backbone_params=100),
        metrics={study.TASKS[task]['metric']: value}, minutes=minutes, threads=1)))


def test_paired_differences_and_intervals_against_the_t_formula(tmp_path):
    lora = {0: 0.10, 1: 0.20, 2: 0.30}
    flora = {0: 0.11, 1: 0.22, 2: 0.33}  # differences 1, 2, 3 points: mean 2, sd 1
    for seed in lora:
        _write(tmp_path, 'dota', 'lora', seed, lora[seed])
        _write(tmp_path, 'dota', 'flora', seed, flora[seed])
    _write(tmp_path, 'dota', 'base', 0, 0.05)  # one seed only: no pair with base
    _write(tmp_path, 'dota', 'flora', 0, 0.12, repeat=1)
    study.aggregate(tmp_path)
    summary = json.loads((tmp_path / 'summary.json').read_text())
    (pair, ) = summary['pairs']
    t975_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5% quantile (tables)
    half = t975_2 * 1.0 / 3 ** 0.5
    assert (pair['a'], pair['b'], pair['seeds']) == ('flora', 'lora', [0, 1, 2])
    assert pair['mean'] == pytest.approx(2.0)
    assert pair['ci95'] == pytest.approx([2.0 - half, 2.0 + half])
    assert pair['verdict'] == 'not resolved (provisional: 3 seeds)'  # the interval [-0.48, 4.48] holds 0
    t = 2.0 / (1.0 / 3 ** 0.5)  # t statistic; with 2 degrees of freedom the t CDF is 1/2 + t / (2 sqrt(t^2 + 2))
    assert pair['p'] == pytest.approx(1 - t / (t * t + 2) ** 0.5)
    assert pair['p_holm'] == pytest.approx(pair['p'])  # a family of one comparison: nothing to adjust
    (rep, ) = summary['repeats']
    assert rep['difference'] == pytest.approx(1.0)
    flora_row = next(m for m in summary['methods'] if m['method'] == 'flora')
    assert flora_row['values'] == pytest.approx([11.0, 22.0, 33.0])  # the repeat is not a seed


@pytest.mark.parametrize('diffs, verdict', [
    ([1.0, 1.2, 0.8, 1.1, 0.9], 'resolved: flora > lora'),
    ([-1.0, -1.2, -0.8, -1.1, -0.9], 'resolved: flora < lora'),
    ([1.0, -1.0, 0.5, 0.2, -0.3], 'not resolved'),
    ([1.0, 1.2, 0.8, 1.1], 'resolved: flora > lora (provisional: 4 seeds)'),
])
def test_verdict_names_the_direction(tmp_path, diffs, verdict):
    for seed, diff in enumerate(diffs):
        _write(tmp_path, 'dota', 'lora', seed, 0.5)
        _write(tmp_path, 'dota', 'flora', seed, 0.5 + diff / 100)
    study.aggregate(tmp_path)
    (pair, ) = json.loads((tmp_path / 'summary.json').read_text())['pairs']
    assert pair['verdict'] == verdict


def test_holm_family_spans_the_tasks_not_each_task(tmp_path):
    """Two tasks with one pair each: the family is both pairs, so the smaller p is doubled (per task it would stay)."""
    for task, diffs in (('dota', [1.0, 1.2, 0.9, 1.1, 1.0]), ('ade20k', [0.5, -0.4, 0.9, 0.2, 0.6])):
        for seed, diff in enumerate(diffs):
            _write(tmp_path, task, 'lora', seed, 0.50 + seed / 500)
            _write(tmp_path, task, 'flora', seed, 0.50 + seed / 500 + diff / 100)
    study.aggregate(tmp_path)
    pairs = sorted(json.loads((tmp_path / 'summary.json').read_text())['pairs'], key=lambda p: p['p'])
    assert [(p['task'], p['a'], p['b']) for p in pairs] == [('dota', 'flora', 'lora'), ('ade20k', 'flora', 'lora')]
    small, large = pairs
    assert small['p_holm'] == pytest.approx(min(1.0, 2 * small['p']))
    assert large['p_holm'] == pytest.approx(max(small['p_holm'], large['p']))


def test_holm_spans_every_pair_of_the_design(tmp_path):
    noisy = [1.0, -0.5, 2.0, 0.3, 1.2]  # flora - lora per seed (points): p about 0.1
    for seed, diff in enumerate(noisy):
        _write(tmp_path, 'dota', 'base', seed, 0.40 + seed / 1000)
        _write(tmp_path, 'dota', 'lora', seed, 0.50 + seed / 500)
        _write(tmp_path, 'dota', 'flora', seed, 0.50 + seed / 500 + diff / 100)
    study.aggregate(tmp_path)
    pairs = {(p['a'], p['b']): p for p in json.loads((tmp_path / 'summary.json').read_text())['pairs']}
    assert set(pairs) == {('flora', 'lora'), ('flora', 'base'), ('lora', 'base')}
    smallest = min(pairs.values(), key=lambda p: p['p'])
    assert smallest['p_holm'] == pytest.approx(3 * smallest['p'])  # Holm's first step is Bonferroni over all 3
    assert all(p['p_holm'] >= p['p'] for p in pairs.values())


@pytest.mark.parametrize('verdict, p_holm, mark', [
    ('resolved: flora > lora', 0.01, ' **resolved**'),
    ('resolved: flora < lora', 0.30, ' **resolved**†'),  # the interval excludes 0, Holm's correction does not
    ('resolved: flora > lora (provisional: 3 seeds)', 0.01, ' resolved (provisional)'),
    ('not resolved', 1.0, ''),
])
def testheadline_marks(verdict, p_holm, mark):
    assert study.headline_mark(dict(verdict=verdict, p_holm=p_holm)) == mark


def test_cost_per_task_and_in_all(tmp_path):
    _write(tmp_path, 'dota', 'lora', 0, 0.5, minutes=2.5)
    _write(tmp_path, 'dota', 'flora', 0, 0.5, minutes=3.0)
    _write(tmp_path, 'ade20k', 'lora', 0, 50.0, minutes=7.25)
    table = study.aggregate(tmp_path)
    assert '2 runs, 6 run-minutes (6 CPU-core-minutes).' in table  # dota: 5.5 rounds to even
    assert 'All tasks: 3 runs, 13 run-minutes (13 CPU-core-minutes).' in table  # 12.75


def test_plots_and_generated_blocks(tmp_path):
    for seed in range(3):
        _write(tmp_path, 'dota', 'lora', seed, 0.5)
        _write(tmp_path, 'dota', 'flora', seed, 0.51 + seed / 100)  # +1, +2, +3 points
    doc, readme = tmp_path / 'page.md', tmp_path / 'README.md'
    for page, name in ((doc, 'summary'), (readme, 'headline')):
        begin, end = study.markers(name)
        page.write_text(f'# Title\n\nprose\n{begin}\nstale table\n{end}\nmore prose\n')
    table = study.aggregate(tmp_path, plots=tmp_path / 'img', doc=doc, readme=readme)
    for page in (doc, readme):
        text = page.read_text()
        assert 'stale table' not in text
        assert text.startswith('# Title\n\nprose\n') and text.endswith('more prose\n')
    assert table in doc.read_text()
    assert '| flora | 10 | - | 52.0 ± 1.0 (3) | - |' in readme.read_text()  # coco, dota, ade20k
    assert '| flora - lora | - | +2.0 [-0.5, +4.5] (3) | - |' in readme.read_text()
    assert (tmp_path / 'img' / 'adaptation_dota.png').read_bytes()[:4] == b'\x89PNG'
    doc.write_text('no markers')
    with pytest.raises(ValueError, match='needs exactly one'):
        study.replace_block(doc, table, 'summary')


def test_plan_runs_zero_shot_once_and_variants_on_their_tasks():
    plan = study.planned_runs(['coco', 'dota'], ['zero_shot', 'flora', 'flora_sgd', 'flora_k7'], [3, 4])
    assert plan == [('coco', 'zero_shot', 3), ('coco', 'flora', 3), ('coco', 'flora_k7', 3),
                    ('coco', 'flora', 4), ('coco', 'flora_k7', 4),
                    ('dota', 'zero_shot', 3), ('dota', 'flora', 3), ('dota', 'flora_sgd', 3),
                    ('dota', 'flora', 4), ('dota', 'flora_sgd', 4)]


def _merged(config, overrides, via_cli):
    import argparse
    from mmengine.config import Config, DictAction
    from flora_mm.engine.runs import cli_options
    cfg = Config.fromfile(str(ROOT / config))
    if via_cli and overrides:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        overrides = parser.parse_args(['--cfg-options', *cli_options(overrides)]).cfg_options
    cfg.merge_from_dict(dict(overrides))
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(study.METHODS))
def test_variant_overrides_survive_the_command_line(method):
    # runs pass the overrides as --cfg-options words: lists (exclude) and None must parse back to the same config
    variant = study.METHODS[method]
    task = next(t for t in study.TASKS if variant.runs_on(t))
    config = variant.config(task)
    cli, direct = _merged(config, variant.overrides, True), _merged(config, variant.overrides, False)
    assert cli.model.backbone.get('adapter') == direct.model.backbone.get('adapter')
    assert cli.optim_wrapper == direct.optim_wrapper


@pytest.mark.slow
def test_the_record_trains_every_adapter_at_x1_whatever_its_declared_default():
    """The untuned protocol is every method at the config's learning rate: a method whose declared lr_mult moved
    (flora_mm.engine.defaults) is pinned back to 1 in its runs; variants without an adapter stay without."""
    from flora_mm.adapters import AdapterConfig
    for method, variant in study.METHODS.items():
        task = next(t for t in study.TASKS if variant.runs_on(t))
        adapter = _merged(variant.config(task), study.run_overrides(task, method, 3), True).model.backbone.get('adapter')
        if variant.overrides.get(study.ADAPTER, 0) is None:
            assert adapter is None, method
        else:
            assert AdapterConfig.from_dict(adapter.to_dict()).effective_lr_mult == 1.0, method


@pytest.mark.parametrize('variant, reference, exclude', [
    ('flora', 'lora', ()), ('flora_4x', 'lora_4x', ()), ('flora_no_dw', 'lora_no_dw', ('conv_dw', )),
])
@pytest.mark.slow
def test_flora_ranks_are_the_budget_matches(variant, reference, exclude):
    from mmengine.registry import init_default_scope
    from flora_mm.models.budget import match_budget
    cfg = _merged(study.TASKS['coco']['config'], {}, False)
    init_default_scope(cfg.default_scope)
    adapter = lambda name: _merged(study.TASKS['coco']['config'], study.METHODS[name].overrides,
                                   False).model.backbone.adapter.to_dict()
    flora, lora = adapter(variant), adapter(reference)
    assert tuple(flora.get('exclude', ())) == tuple(lora.get('exclude', ())) == exclude
    rank, _, _ = match_budget(cfg.model.backbone, {**flora, 'rank': 1}, lora)
    assert rank == flora['rank']


def test_sgd_variant_changes_only_the_optimizer():
    sgd, adamw = (_merged(study.METHODS['flora_sgd'].config('dota'), {}, False),
                  _merged(study.TASKS['dota']['config'], {}, False))
    assert sgd.optim_wrapper.optimizer == dict(type='SGD', lr=5e-3, momentum=0.9, weight_decay=1e-4)
    assert adamw.optim_wrapper.optimizer.type == 'AdamW'
    for key in ('model', 'train_dataloader', 'param_scheduler', 'train_cfg', 'load_from'):
        assert sgd[key] == adamw[key], key


def test_readme_and_report_tables_are_the_committed_runs():
    """The README's headline table and the report's summary block are what tools/reproduce.py computes now from
    the committed per-run files (results/adaptation/runs); regenerate them with --aggregate-only."""
    from flora_mm import docblocks
    runs = sorted((ROOT / 'results' / 'adaptation' / 'runs').glob('*/*.json'))
    assert len(runs) >= 191
    summary = study.summarize([json.loads(p.read_text()) for p in runs])
    assert docblocks.read_block(ROOT / 'README.md', 'tools/reproduce.py', 'headline') == study.headline(summary)
    assert docblocks.read_block(ROOT / 'docs' / 'reproduction.md', 'tools/reproduce.py', 'summary') == \
        study.render(summary)

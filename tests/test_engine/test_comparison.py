"""The tuned comparison's rules (flora_mm.engine.comparison): budgets within 1% of the reference, the selection rule
and its edge extension, the refusal to test an unselected setting; the records are written here by hand, as a
finished validation run writes them."""
import json
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from flora_mm.engine import comparison as C
from flora_mm.models.budget import adapter_budget
from tests.test_configs.smoke import ROOT


def _record(out, mult, value, task='coco', method='flora', state='COMPLETE'):
    path = out / 'validation' / task / method / f'lr{mult:g}_s{C.VALIDATION_SEED}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(lr_mult=mult, value=value, state=state)))


@pytest.mark.parametrize('curve,pending,selected', [
    ({}, C.LR_GRID, None),                                                         # nothing ran
    ({0.0625: .1, 0.25: .2, 1: .3}, (4.0, 16.0), None),                            # grid incomplete
    ({0.0625: .1, 0.25: .2, 1: .5, 4: .3, 16: .1}, (), 1.0),                       # interior optimum
    ({0.0625: .1, 0.25: .2, 1: .3, 4: .4, 16: .5}, (64.0, ), None),                # upper edge: extend up
    ({0.0625: .6, 0.25: .2, 1: .3, 4: .4, 16: .5}, (0.015625, ), None),            # lower edge: extend down
    ({0.0625: .1, 0.25: .2, 1: .3, 4: .4, 16: .5, 64: .45}, (), 16.0),             # extended, now interior
    ({0.0625: .1, 0.25: .2, 1: .3, 4: .4, 16: math.nan}, (), 4.0),                 # a diverged point is worst
    ({0.0625: .1, 0.25: .3, 1: .3, 4: .2, 16: .1}, (), 0.25),                      # a tie: the smaller multiplier
])
def test_selection_rule_and_edge_extension(tmp_path, curve, pending, selected):
    for mult, value in curve.items():
        _record(tmp_path, mult, value, state='FAIL' if math.isnan(value) else 'COMPLETE')
    assert C.extension(tmp_path, 'coco', 'flora') == tuple(pending)
    if selected is None:
        with pytest.raises(RuntimeError, match='has not selected a setting yet'):
            C.selected_lr_mult(tmp_path, 'coco', 'flora')
    else:
        assert C.selected_lr_mult(tmp_path, 'coco', 'flora') == selected


def test_a_method_still_at_an_edge_after_the_extensions_is_reported_and_not_tested(tmp_path):
    mults = [0.0625 * 4 ** i for i in range(len(C.LR_GRID) + C.MAX_EXTENSIONS)]
    for i, mult in enumerate(mults):
        _record(tmp_path, mult, i)  # increasing to the last point
    with pytest.raises(C.NoInteriorOptimum, match='still at the edge'):
        C.extension(tmp_path, 'coco', 'flora')
    with pytest.raises(C.NoInteriorOptimum):
        C.run_test_split('coco', 'flora', 0, ROOT, tmp_path)
    assert 'flora' not in C.test_methods(tmp_path, 'coco') and 'lora' in C.test_methods(tmp_path, 'coco')
    assert 'flora' in C.test_methods(tmp_path, 'coco', 'default')  # x1 is still a setting it can be tested at
    assert '| at an edge: not tested |' in C.curves_table(tmp_path, ('coco', ))
    rows = {r['phase']: r for r in C.progress(tmp_path, ('coco', ))}
    assert rows['test (tuned)']['to_run'] == sum(len(s) for m, s in C.TEST_SEEDS.items() if m != 'flora')


@pytest.mark.parametrize('stats', [
    None,                                                                       # a validation run: plain indent=1
    [[[3, 5], [0, 2]], [[1, 1], [4, 9]]],                                       # segmentation: [images, classes, 2]
    {'dets': [[0.0, 1.0, 0.875, 1023.0, 0.0], [1.0, 2.0, 0.5, 0.0, 1023.0]], 'gts': [[1, 0, 2], [0, 0, 1]]},
    {'dets': [], 'gts': [[0, 0, 0]]},                                           # no detection at all
])
def test_run_files_keep_one_statistics_row_per_line(stats):
    data = dict(task='coco', method='flora', seed=0, value=0.5, image_stats=stats, predictions=None)
    text = C.dump_run(data)
    assert json.loads(text) == data
    if stats is None:
        assert text == json.dumps(data, indent=1) + '\n'
    else:
        rows = stats['dets'] + stats['gts'] if isinstance(stats, dict) else stats
        assert len(text.splitlines()) <= len(rows) + 15  # a line per row, not per number
        assert all(f'{json.dumps(r, separators=(",", ":"))}' in text for r in rows)


def test_grid_is_log_spaced_a_factor_four_apart_with_five_points():
    ratios = {b / a for a, b in zip(C.LR_GRID, C.LR_GRID[1:])}
    assert len(C.LR_GRID) >= 5 and ratios == {C.GRID_FACTOR} and 1.0 in C.LR_GRID


@pytest.mark.parametrize('method', [m for m, spec in C.METHODS.items()
                                    if spec['adapter'] is not None and 'rank' in spec['adapter']])
@pytest.mark.slow
def test_rank_methods_are_within_one_percent_of_the_reference_budget(method):
    """Oracle: the adapter budget counted on the built backbone, against LoRA r=16's."""
    cfg = Config.fromfile(str(ROOT / C.TASKS['coco']['config']))
    init_default_scope(cfg.default_scope)
    reference = adapter_budget(cfg.model.backbone, C.REFERENCE)[0]
    cfg.merge_from_dict(C.method_overrides('coco', method, ROOT))
    budget = adapter_budget(cfg.model.backbone, cfg.model.backbone.adapter)[0]
    assert abs(budget / reference - 1) <= C.BUDGET_TOLERANCE
    assert cfg.model.backbone.adapter.type == C.METHODS[method]['adapter']['type']  # replaced, not merged
    assert cfg.model.backbone.adapter.get('kernel_rank') == C.METHODS[method]['adapter'].get('kernel_rank')


def test_each_validation_grid_has_a_work_dir_of_its_own():
    main = C.validation_settings('coco', 'flora', ROOT)
    rest = C.validation_settings('coco', 'flora', ROOT, grid=(0.25, 4.0))
    up = C.validation_settings('coco', 'flora', ROOT, grid=(64.0, ))
    assert main.work_dir == ROOT / 'work_dirs' / 'tuned' / 'full' / 'coco' / 'flora'
    assert len({main.work_dir, rest.work_dir, up.work_dir}) == 3
    assert len({main.study_name, rest.study_name, up.study_name}) == 3
    assert [p.values for p in up.params] == [(64.0, )]


def test_the_study_scales_only_the_backbone_learning_rate():
    """The grid multiplies the config's lr (backbone_lr_mult); a method's declared lr_mult other than 1
    (flora_mm.engine.defaults moves some) would shift its grid by it: the study's adapters train at x1 before the
    grid applies."""
    from flora_mm.adapters import AdapterConfig
    for method, spec in C.METHODS.items():
        adapter = C.method_config('coco', method, ROOT).model.backbone.get('adapter')
        assert (adapter is None) == (spec['adapter'] is None), method
        if adapter is not None:
            assert AdapterConfig.from_dict(adapter.to_dict()).effective_lr_mult == 1.0, method


def test_base_is_untuned():
    with pytest.raises(ValueError, match='no learning-rate grid'):
        C.validation_study('coco', 'base', ROOT, ROOT / 'unused')
    assert C.selected_lr_mult(ROOT / 'unused', 'coco', 'base') == 1.0


def test_readme_validation_curves_are_the_run_files():
    from flora_mm import docblocks
    block = docblocks.read_block(ROOT / 'README.md', 'tools/tuned_study.py', 'curves')
    assert block == C.curves_table(ROOT / 'results' / 'tuned') + '\n'


@pytest.mark.slow
def test_preregistration_budget_table_is_what_the_solver_gives_now():
    from flora_mm import docblocks
    block = docblocks.read_block(ROOT / 'docs' / 'preregistration.md', 'tools/tuned_study.py', 'budgets')
    assert block == C.budget_table(ROOT) + '\n'


def test_curve_panels_hold_every_tuned_method_once():
    panels = [m for methods in C.CURVE_PANELS.values() for m in methods]
    assert sorted(panels) == sorted(m for m in C.METHODS if m not in C.UNTUNED)


def test_curves_figure_draws_the_run_files(tmp_path):
    """FLoRA's five points (one failed) and LoRA's two: each line is its runs in %, the failed point an 'x' on the
    axis, FLoRA's selection (x4) ringed; a task without runs has no figure."""
    import matplotlib.pyplot as plt
    for mult, value in {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4}.items():
        _record(tmp_path, mult, value, state='FAIL' if mult == 16 else 'COMPLETE')
    for mult in (0.0625, 0.25):
        _record(tmp_path, mult, 0.2, method='lora')
    fig = C.curves_figure(tmp_path, 'coco')
    low_rank = fig.axes[0]
    lines = {ln.get_label(): ln for ln in low_rank.get_lines() if not ln.get_label().startswith('_')}
    assert set(lines) == {'flora', 'lora'}
    assert list(lines['flora'].get_xdata()) == [0.0625, 0.25, 1, 4]
    assert list(lines['flora'].get_ydata()) == pytest.approx([10, 20, 30, 50])
    extra = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in low_rank.get_lines() if ln.get_label().startswith('_')]
    assert ([16], [0]) in extra and ([4], [pytest.approx(50)]) in extra  # the failed run, the ringed selection
    top_left, top_right, bottom_left, bottom_right = fig.axes
    assert bottom_left.get_ylim() == pytest.approx((50 - 12, 50 + 1))  # the zoom under the low-rank column's best
    assert len(bottom_left.get_lines()) == len(low_rank.get_lines())  # the same curves
    assert not top_right.get_lines() and not bottom_right.get_lines()  # no per-channel method ran
    plt.close(fig)
    assert C.curves_figure(tmp_path, 'dota') is None
    assert [p.name for p in C.plot_curves(tmp_path, ('coco', 'dota'), tmp_path / 'plots')] == ['coco_curves.png']


def test_curves_table_marks_failed_points_and_pending_selections(tmp_path):
    for mult, value in {0.0625: .1, 0.25: .2, 1: .5, 4: .3, 16: math.nan}.items():
        _record(tmp_path, mult, value, state='FAIL' if math.isnan(value) else 'COMPLETE')
    _record(tmp_path, 1.0, 0.4, method='lora')
    table = C.curves_table(tmp_path, ('coco', ))
    assert '| flora | 10.0 | 20.0 | 50.0 | 30.0 | x | x1 |' in table
    assert '| lora | - | - | 40.0 | - | - | pending |' in table
    assert '| dora |' not in table and 'Not run yet: full, bitfit, dora,' in table
    assert 'across tasks' not in table  # one task: nothing to set side by side
    _record(tmp_path, 4.0, 0.3, task='dota')
    table = C.curves_table(tmp_path, ('coco', 'dota'))
    assert '| flora | x1 | pending |' in table and '| lora | pending | - |' in table


def test_no_test_split_run_before_the_preregistration_or_a_selection(tmp_path):
    import subprocess
    repo = tmp_path / 'repo'
    repo.mkdir()
    subprocess.run(['git', 'init', '-q', str(repo)], check=True)
    with pytest.raises(RuntimeError, match='is not committed'):
        C.preregistration_commit(repo)
    (repo / 'docs').mkdir()
    (repo / C.PREREGISTRATION).write_text('protocol\n')
    git = ['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run([*git, 'add', '.'], check=True)
    subprocess.run([*git, 'commit', '-qm', 'prereg'], check=True)
    first = C.preregistration_commit(repo)
    (repo / C.PREREGISTRATION).write_text('protocol, edited\n')
    with pytest.raises(RuntimeError, match='uncommitted changes'):
        C.preregistration_commit(repo)
    subprocess.run([*git, 'commit', '-qam', 'amend the protocol'], check=True)
    assert C.preregistration_commit(repo) == first  # the first commit dates it
    with pytest.raises(RuntimeError, match='has not selected a setting yet'):  # nothing validated in tmp_path
        C.run_test_split('coco', 'flora', 0, ROOT, tmp_path / 'out', quick=True)
    assert not (tmp_path / 'out' / 'test').exists()


def test_default_setting_runs_only_where_validation_selected_something_else(tmp_path):
    """The pre-registered tuned-vs-default runs: refused (before any training) for Base and for a method whose
    selection is the default x1 -- its tuned runs are its default runs, and the report reads them as such."""
    for mult, value in {0.0625: .1, 0.25: .2, 1: .5, 4: .3, 16: .1}.items():
        _record(tmp_path, mult, value, method='dora')  # selects x1
    for mult, value in {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4}.items():
        _record(tmp_path, mult, value, method='lora')  # selects x4
    assert 'dora' not in C.test_methods(tmp_path, 'coco', 'default')
    assert 'lora' in C.test_methods(tmp_path, 'coco', 'default') and 'base' not in C.test_methods(tmp_path, 'coco',
                                                                                                      'default')
    for method in ('dora', 'base'):
        with pytest.raises(ValueError, match='are at the default lr_mult 1 already'):
            C.run_test_split('coco', method, 0, ROOT, tmp_path, setting='default')
    with pytest.raises(ValueError, match="unknown test setting 'defaults'"):
        C.run_test_split('coco', 'lora', 0, ROOT, tmp_path, setting='defaults')
    assert not (tmp_path / 'test_default').exists()
    tuned = dict(seed=0, lr_mult=1.0, value=0.5)
    for method, folder in (('dora', 'test'), ('lora', 'test'), ('lora', 'test_default')):
        path = tmp_path / folder / 'coco' / method / 's0.json'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(tuned, lr_mult=4.0 if (method, folder) == ('lora', 'test') else 1.0)))
    assert C.heldout_runs(tmp_path, 'coco', 'dora', setting='default') == {0: tuned}  # x1 selected: the same runs
    assert C.heldout_runs(tmp_path, 'coco', 'lora', setting='default') == {0: tuned}  # its own default run
    assert C.heldout_runs(tmp_path, 'coco', 'lora')[0]['lr_mult'] == 4.0


def test_preregistered_seeds_are_paired_and_cover_the_protocol():
    assert all(set(range(5)) <= set(seeds) for seeds in C.TEST_SEEDS.values())
    assert all(len(C.TEST_SEEDS[m]) >= 10 for m in ('flora', 'lora', 'dora'))
    # the default runs (amendment A3: seeds 0-2) pair with every method's tuned runs
    assert all(set(C.DEFAULT_SEEDS) <= set(seeds) for seeds in C.TEST_SEEDS.values()) and len(C.DEFAULT_SEEDS) >= 3
    assert C.test_order(['ssl', 'flora'], 'default') == [(s, m) for s in range(3) for m in ('ssl', 'flora')]
    order = C.test_order(['base', 'flora', 'ssl'])
    assert order[:6] == [(0, 'base'), (0, 'flora'), (0, 'ssl'), (1, 'base'), (1, 'flora'), (1, 'ssl')]
    assert order[15:] == [(s, 'flora') for s in range(5, 10)] and len(order) == 20  # seed by seed: paired at a stop
    assert C.test_order(['flora', 'lora'], seeds=(7, )) == [(7, 'flora'), (7, 'lora')]


def test_the_batch_plans_every_preregistered_test_run_once_and_any_stop_leaves_a_preregistered_cut(tmp_path):
    """Amendment A4: whole seeds over the tasks, the secondary methods' seeds 3-4 last (the first cut), the default
    runs before them; the expected runs are written out from the protocol's constants."""
    tasks = ('coco', 'dota')
    with pytest.raises(RuntimeError, match=r"grids of \['coco/full', 'coco/bitfit'.*amendment A2"):
        C.batch_order(tmp_path, tasks)
    for task in tasks:
        for method in (m for m in C.METHODS if m not in C.UNTUNED):
            if (task, method) == ('dota', 'ssb'):  # still at the upper edge after every extension: decided, untested
                for i in range(len(C.LR_GRID) + C.MAX_EXTENSIONS):
                    _record(tmp_path, 0.0625 * 4 ** i, i, task=task, method=method)
                continue
            peak = 1.0 if method == 'dora' else 4.0  # DoRA selects the default: its tuned runs are its default runs
            for mult in C.LR_GRID:
                _record(tmp_path, mult, -abs(math.log(mult / peak)), task=task, method=method)
    order = C.batch_order(tmp_path, tasks)
    tuned = {(t, m) for t in tasks for m in C.METHODS} - {('dota', 'ssb')}
    expected = {('tuned', t, s, m, 0) for t, m in tuned for s in C.TEST_SEEDS[m]}
    expected |= {('tuned', t, 0, 'flora', 1) for t in tasks}
    expected |= {('default', t, s, m, 0) for t in tasks for m in C.METHODS if m not in ('base', 'dora')
                 for s in range(3)}
    assert len(order) == len(set(order)) and set(order) == expected
    cut = [r for r in order if r.setting == 'tuned' and r.method in C.SECONDARY and r.seed >= 3]
    assert cut and order[-len(cut):] == cut  # the first cut is the tail
    head = order[:-len(cut)]
    defaults = [r for r in head if r.setting == 'default']
    assert head[-len(defaults):] == defaults  # the default runs follow every tuned run that is kept
    kept = head[:-len(defaults)]
    assert [r.seed for r in kept] == sorted(r.seed for r in kept)  # seed by seed
    for seed in range(10):  # within a seed, task after task; the repeats right after seed 0
        runs = [r for r in kept if r.seed == seed and not r.repeat]
        assert [r.task for r in runs] == sorted((r.task for r in runs), key=tasks.index)
    assert [r[:2] + r[3:] for r in kept if r.repeat] == [('tuned', t, 'flora', 1) for t in tasks]
    assert kept.index(('tuned', 'coco', 0, 'flora', 1)) == sum(r.seed == 0 and not r.repeat for r in kept)
    assert [r.seed for r in defaults] == sorted(r.seed for r in defaults)
    assert C.test_run_path(tmp_path, 'coco', 'flora', 0, 1) == tmp_path / 'test' / 'coco' / 'flora' / 's0_r1.json'
    assert C.test_run_path(tmp_path, 'dota', 'lora', 2, setting='default').parts[-4:] == (
        'test_default', 'dota', 'lora', 's2.json')


@pytest.mark.subprocess
@pytest.mark.parametrize('task,stats_metric', [('ade20k', 'miou'), ('coco', 'bbox_map'), ('dota', 'rbox_map')])
def test_a_test_split_run_trains_at_the_selected_setting_and_evaluates_the_test_split(tmp_path, task, stats_metric):
    from flora_mm.engine import analysis
    from flora_mm.engine.targets import ensure_task_data
    out = tmp_path / 'out'
    for mult, value in {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4}.items():
        _record(out, mult, value, task=task, method='lora')
    ensure_task_data(task, tmp_path, quick=True)
    run = C.run_test_split(task, 'lora', 3, ROOT, out, quick=True, workspace=tmp_path)
    assert run['lr_mult'] == 4.0 and run['split'] == 'test' and run['seed'] == 3
    assert run['preregistration_commit'] == C.preregistration_commit(ROOT)
    assert run['environment']['packages']['torch'] == torch.__version__.split('+')[0]  # where it ran, recorded
    resolved = Config.fromstring(run['resolved_config'], '.py')
    assert resolved.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 4.0
    assert resolved.randomness.seed == 3 and resolved.model.backbone.adapter.rank == 16
    assert 'test' in str(resolved.test_dataloader.dataset.data_prefix)
    # per-image statistics (for the bootstrap over test images) that reproduce the evaluator's number
    stats = run['image_stats']
    stats = np.asarray(stats) if task == 'ade20k' else {k: np.asarray(v) for k, v in stats.items()}
    rounding = 0.01 if task == 'ade20k' else 0.0005  # mmseg reports mIoU to 0.01, mmdet / mmrotate mAP to 0.001
    assert abs(getattr(analysis, stats_metric)(stats) - run['value']) <= rounding + 1e-9
    assert run['predictions'] is None and not list(tmp_path.glob('work_dirs/**/test_predictions.pkl'))
    assert C.run_test_split(task, 'lora', 3, ROOT, out, quick=True, workspace=tmp_path) == run  # read back


@pytest.mark.subprocess
def test_a_default_setting_run_trains_at_x1_into_its_own_folder(tmp_path):
    from flora_mm.engine.targets import ensure_task_data
    out = tmp_path / 'out'
    for mult, value in {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4}.items():
        _record(out, mult, value, method='lora')
    ensure_task_data('coco', tmp_path, quick=True)
    run = C.run_test_split('coco', 'lora', 1, ROOT, out, quick=True, workspace=tmp_path, setting='default')
    assert run['lr_mult'] == 1.0 and run['setting'] == 'default' and run['split'] == 'test'
    resolved = Config.fromstring(run['resolved_config'], '.py')
    assert resolved.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 1.0
    assert (out / 'test_default' / 'coco' / 'lora' / 's1.json').exists() and not (out / 'test').exists()
    assert C.heldout_runs(out, 'coco', 'lora', setting='default') == {1: run}


@pytest.mark.parametrize('lo,hi,holm_p,relation,expected', [
    (0.2, 1.5, 0.01, '>', 'supported'),
    (0.2, 1.5, 0.20, '>', 'unresolved'),        # resolved per comparison, not after Holm
    (-1.5, -0.2, 0.01, '>', 'not supported'),   # resolved the other way
    (-0.4, 0.3, 0.90, '>', 'not supported'),    # practically equal
    (-0.8, 1.2, 0.50, '>', 'unresolved'),
    (-0.4, 0.3, 0.90, '~', 'supported'),
    (0.6, 1.2, 0.01, '~', 'not supported'),
    (-0.8, 0.3, 0.50, '~', 'unresolved'),
])
def test_verdicts_follow_the_preregistered_rules(lo, hi, holm_p, relation, expected):
    assert C.verdict(dict(lo=lo, hi=hi, holm_p=holm_p), relation) == expected


def _test_run(out, method, seed, stats, repeat=0, task='ade20k', folder='test', lr_mult=1.0, environment=None):
    from flora_mm.engine.analysis import miou
    path = out / folder / task / method / (f's{seed}.json' if not repeat else f's{seed}_r{repeat}.json')
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if environment is None else dict(environment=environment)
    path.write_text(json.dumps(dict(seed=seed, repeat=repeat, value=miou(stats), image_stats_kind='segmentation',
                                    image_stats=stats.tolist(), lr_mult=lr_mult, **extra)))


def test_resampled_metrics_are_kept_between_processes_and_never_stale(tmp_path, monkeypatch):
    """With RESAMPLED_CACHE set, a run's resampled metric is read back instead of recomputed (a fresh process: the
    in-memory memo cleared), equal to the recomputation; changed statistics get a file of their own."""
    from flora_mm.engine import analysis
    rng = np.random.default_rng(1)
    stats = rng.integers(10, 100, size=(12, 3, 2))
    _test_run(tmp_path, 'flora', 0, stats)
    run = json.loads((tmp_path / 'test' / 'ade20k' / 'flora' / 's0.json').read_text())
    monkeypatch.setattr(C, 'RESAMPLED_CACHE', tmp_path / 'cache')
    monkeypatch.setattr(C, '_RESAMPLED', {})
    value, values, images = C._resampled(run, 50)
    assert len(list((tmp_path / 'cache').glob('*.npz'))) == 1 and images == 12
    expected = analysis.metric_on_draws(analysis.miou, stats, analysis.image_draws(12, 50))  # the oracle
    np.testing.assert_allclose(values, expected)
    assert value == pytest.approx(analysis.miou(stats))
    monkeypatch.setattr(C, '_RESAMPLED', {})  # as in a new process
    monkeypatch.setattr(C, 'metric_on_draws', lambda *a: pytest.fail('recomputed although kept'))
    again = C._resampled(run, 50)
    assert again[0] == value and again[2] == images and np.array_equal(again[1], values)
    changed = dict(run, image_stats=(stats + 1).tolist())
    with pytest.raises(pytest.fail.Exception, match='recomputed'):
        C._resampled(changed, 50)


def test_repeats_table_shows_every_repeat_and_whether_its_images_agree(tmp_path):
    """Repeats 1 and 2 of one seed are both rows (not just the first); a repeat whose images are swapped keeps the
    metric (a difference of 0) but is marked 'differ'; a repeat without its seed's first run is no row. The last
    column compares the recorded environments: equal, unequal (another CPU instruction set), or one missing."""
    from flora_mm.engine.analysis import miou
    stats = np.array([[[10, 30]], [[20, 25]], [[5, 40]]])  # 3 images, 1 class: (intersection, union)
    swapped = stats[[1, 0, 2]]  # the same images in another order: the same mIoU, other per-image statistics
    worse = stats - np.array([[[5, 0]], [[0, 0]], [[0, 0]]])
    here = dict(cpu='EPYC', cpu_capability='AVX2', python='3.11.7', packages=dict(torch='2.14.1'))
    there = dict(here, cpu_capability='AVX512')
    for repeat, s, env in ((0, stats, here), (1, stats, dict(here)), (2, swapped, None), (3, worse, there)):
        _test_run(tmp_path, 'flora', 0, s, repeat=repeat, environment=env)
    _test_run(tmp_path, 'lora', 4, stats, repeat=1)  # no s4.json
    value, lower = miou(stats), miou(worse)
    assert value == pytest.approx(miou(swapped)) and lower < value  # the oracle's premises
    assert C.repeats_table(tmp_path, tasks=('ade20k', )) == [
        ['ade20k', 'flora', '0', '1', f'{value:.4f}', f'{value:.4f}', '+0.0000', 'identical', 'same'],
        ['ade20k', 'flora', '0', '2', f'{value:.4f}', f'{value:.4f}', '+0.0000', 'differ', 'not recorded'],
        ['ade20k', 'flora', '0', '3', f'{value:.4f}', f'{lower:.4f}', f'{lower - value:+.4f}', 'differ', 'differs'],
    ]
    rows = {r['phase']: r for r in C.progress(tmp_path, tasks=('ade20k', ))}
    assert (rows['same-seed repeat']['done'], rows['same-seed repeat']['to_run']) == (3, 0)


def test_analysis_of_test_runs_gives_intervals_holm_and_claims(tmp_path):
    """Seeds 0-4 of FLoRA, LoRA, DoRA, TriLoRA: FLoRA - LoRA is read on 5 of its 10 pre-registered seeds (interim,
    and so is the FLoRA paper's claim), FLoRA - TriLoRA on all 5 of its own; seeds 5-9 complete the first."""
    rng = np.random.default_rng(0)
    base = rng.integers(50, 100, size=(40, 5, 1))

    def runs(seeds, methods):
        for seed in seeds:
            for method, hit in methods:
                inter = (base * (hit + rng.normal(0, 0.01, size=base.shape))).astype(np.int64)
                _test_run(tmp_path, method, seed, np.concatenate([inter, 2 * base - inter], axis=2))
                if method == 'flora' and seed == 0:  # a same-seed repeat: shown, and never counted as a seed
                    _test_run(tmp_path, method, seed, np.concatenate([inter, 2 * base - inter], axis=2), repeat=1)
    low_rank = (('flora', 0.80), ('lora', 0.70), ('dora', 0.70))
    runs(range(5), (*low_rank, ('trilora', 0.75)))
    result = C.analyse(tmp_path, tasks=('ade20k', ), resamples=300)
    pairs = {(r['a'], r['b']): r for r in result['comparisons']}
    assert set(pairs) == {('flora', 'lora'), ('flora', 'dora'), ('dora', 'lora'), ('flora', 'trilora'),
                          ('trilora', 'lora')}  # the others have no runs
    assert pairs[('flora', 'lora')]['lo'] > 0 and pairs[('flora', 'lora')]['covers'] == 'seeds and test images'
    assert all(r['holm_p'] >= r['p'] for r in pairs.values())
    assert {k for k, r in pairs.items() if r['interim']} == {('flora', 'lora'), ('flora', 'dora'), ('dora', 'lora')}
    claims = result['claims']
    flora = claims['FLoRA paper: FLoRA > LoRA and DoRA at a matched budget']
    assert flora['per_task'] == {'ade20k': 'supported'} and flora['interim'] == {'ade20k': True}
    agb = claims['Subspace paper: P(AGB) > P(ADB) > P(AB) (FLoRA > diagonal core > LoRA)']
    assert agb['interim'] == {'ade20k': False}  # its comparisons have all their paired seeds (5)
    ssb = claims['Subspace paper: SSB > SSL ~ (IA)3']
    assert ssb['per_task'] == {'ade20k': 'unresolved'} and ssb['interim'] == {'ade20k': True}  # no runs yet
    text = C.report(tmp_path, tasks=('ade20k', ), resamples=300)
    assert '| FLoRA paper: FLoRA > LoRA and DoRA at a matched budget | supported (interim) |' in text
    assert '| supported (interim) |' in next(line for line in text.splitlines() if line.startswith('| flora - lora |'))
    assert C.INTERIM_NOTE in text
    assert '| ade20k | flora | 0 |' in text and '+0.0000 |' in text  # the repeat row
    runs(range(5, 10), low_rank)
    result = C.analyse(tmp_path, tasks=('ade20k', ), resamples=300)
    assert not any(r['interim'] for r in result['comparisons'])
    flora = result['claims']['FLoRA paper: FLoRA > LoRA and DoRA at a matched budget']
    assert flora['per_task'] == {'ade20k': 'supported'} and flora['interim'] == {'ade20k': False}
    assert flora['overall'] == 'unresolved'  # one task of three
    text = C.report(tmp_path, tasks=('ade20k', ), resamples=300)
    assert '| FLoRA paper: FLoRA > LoRA and DoRA at a matched budget | supported |' in text
    assert len(C.heldout_runs(tmp_path, 'ade20k', 'flora')) == 10
    assert C.report(tmp_path / 'nothing', tasks=('ade20k', )).startswith('No test-split run yet')


def test_report_puts_each_method_tuned_next_to_its_default(tmp_path):
    """Tuned (x4) vs default (x1) on the same seeds: the gain's interval is centred on the mean of the per-seed mIoU
    differences (recomputed here from the per-image counts); the default-setting comparisons are listed with their
    own direction next to the tuned one."""
    rng = np.random.default_rng(2)
    base = rng.integers(50, 100, size=(30, 5, 1))
    runs = {}
    for seed in range(3):
        for method, folder, mult, hit in (('flora', 'test', 4.0, 0.85), ('flora', 'test_default', 1.0, 0.70),
                                          ('lora', 'test', 1.0, 0.75)):
            inter = (base * (hit + rng.normal(0, 0.01, size=base.shape))).astype(np.int64)
            stats = np.concatenate([inter, 2 * base - inter], axis=2)
            runs[(method, folder, seed)] = stats
            _test_run(tmp_path, method, seed, stats, folder=folder, lr_mult=mult)

    def miou(stats):  # the oracle: mean over classes of intersection / union, in percent
        inter, union = stats[..., 0].sum(0), stats[..., 1].sum(0)
        return 100 * float(np.mean(inter / union))
    gain = C.tuning_gain(tmp_path, 'ade20k', 'flora', resamples=200)
    expected = np.mean([miou(runs[('flora', 'test', s)]) - miou(runs[('flora', 'test_default', s)]) for s in range(3)])
    assert gain['mean'] == pytest.approx(expected) and gain['lo'] > 0
    assert C.tuning_gain(tmp_path, 'ade20k', 'lora') is None  # tuned at x1: nothing to gain
    text = C.report(tmp_path, tasks=('ade20k', ), resamples=200)
    assert '| flora | x4 | ' in text and f'{expected:+.2f} [' in text
    default = C.compare(tmp_path, 'ade20k', 'flora', 'lora', resamples=200, setting='default')
    tuned = C.compare(tmp_path, 'ade20k', 'flora', 'lora', resamples=200)
    assert default['hi'] < 0 < tuned['lo']  # the default verdict flips after tuning, and the report says so
    assert f'| flora - lora | {default["mean"]:+.2f} [{default["lo"]:+.2f}, {default["hi"]:+.2f}] | a < b | a > b |' in text


def test_report_places_each_method_between_base_and_full(tmp_path):
    """Item 5 of the analysis: method - Base and Full - method with their intervals, and the share of Full - Base a
    method recovers, recomputed here from the per-image counts (Full and Base on seeds 0-2; LoRA on 0-1 only has
    no share, since its differences are not over the same seeds)."""
    rng = np.random.default_rng(3)
    base = rng.integers(50, 100, size=(30, 5, 1))
    runs = {}
    for method, hit, seeds in (('base', 0.60, 3), ('full', 0.90, 3), ('flora', 0.80, 3), ('lora', 0.75, 2)):
        for seed in range(seeds):
            inter = (base * (hit + rng.normal(0, 0.01, size=base.shape))).astype(np.int64)
            runs[(method, seed)] = np.concatenate([inter, 2 * base - inter], axis=2)
            _test_run(tmp_path, method, seed, runs[(method, seed)])

    def miou(stats):  # the oracle
        return 100 * float(np.mean(stats[..., 0].sum(0) / stats[..., 1].sum(0)))

    def gap(a, b, seeds):
        return np.mean([miou(runs[(a, s)]) - miou(runs[(b, s)]) for s in seeds])
    result = C.analyse(tmp_path, tasks=('ade20k', ), resamples=200)
    found = {(r['a'], r['b']): r for r in result['bracket']}
    assert set(found) == {('full', 'base'), ('flora', 'base'), ('lora', 'base'), ('full', 'flora'), ('full', 'lora')}
    assert found[('flora', 'base')]['mean'] == pytest.approx(gap('flora', 'base', range(3)))
    assert found[('full', 'flora')]['lo'] > 0 and found[('flora', 'base')]['lo'] > 0
    assert all(r not in result['comparisons'] for r in result['bracket'])  # descriptive: outside Holm's family
    share = 100 * gap('flora', 'base', range(3)) / gap('full', 'base', range(3))
    text = C.report(tmp_path, tasks=('ade20k', ), resamples=200)
    row = next(line for line in text.splitlines() if line.startswith('| flora | +'))
    assert row.endswith(f'| {share:.0f}% |') and 60 < share < 73  # about (0.8 - 0.6) / (0.9 - 0.6)
    assert next(line for line in text.splitlines() if line.startswith('| lora | +')).endswith('| - |')
    assert '| base | - |' not in text  # Base is the bracket's end, not a row of it


def test_detection_runs_are_compared_in_points_and_each_run_is_resampled_once(tmp_path, monkeypatch):
    """COCO test runs (per-detection statistics, a dict): FLoRA - LoRA and FLoRA - DoRA are 100 x the per-seed
    bbox_map differences (recomputed here); FLoRA's runs enter both comparisons but are evaluated on the image
    resamples once each (6 runs, 6 evaluations)."""
    from flora_mm.engine.analysis import bbox_map
    rng = np.random.default_rng(4)
    n, dets = 20, 60
    gts = rng.integers(0, 3, size=(n, 3))
    stats = {}
    for seed in range(2):
        for method, hit in (('flora', 0.7), ('lora', 0.4), ('dora', 0.5)):
            tp = np.where(rng.random(dets) < hit, 1023, 0)
            stats[(method, seed)] = dict(dets=np.c_[rng.integers(0, n, dets), rng.integers(0, 3, dets), rng.random(dets),
                                                    tp, 1023 - tp], gts=gts)
            path = tmp_path / 'test' / 'coco' / method / f's{seed}.json'
            path.parent.mkdir(parents=True, exist_ok=True)
            s = stats[(method, seed)]
            path.write_text(json.dumps(dict(seed=seed, repeat=0, lr_mult=1.0, value=bbox_map(s), image_stats_kind='coco',
                                            image_stats={k: v.tolist() for k, v in s.items()})))
    calls = []
    counting = C.metric_on_draws
    monkeypatch.setattr(C, 'metric_on_draws', lambda *a: calls.append(1) or counting(*a))
    monkeypatch.setattr(C, '_RESAMPLED', {})
    for other in ('lora', 'dora'):
        result = C.compare(tmp_path, 'coco', 'flora', other, resamples=100)
        expected = np.mean([100 * (bbox_map(stats[('flora', s)]) - bbox_map(stats[(other, s)])) for s in range(2)])
        assert result['mean'] == pytest.approx(expected) and result['images'] == n
        assert result['lo'] <= result['mean'] <= result['hi']
    assert len(calls) == 6


def test_holm_family_is_every_task_together(tmp_path):
    """FLoRA - LoRA on two tasks, each a family of one if Holm ran per task: over the design, the smaller p is
    doubled and the larger is max(its own p, the first adjusted) (Holm's step-down, by hand)."""
    rng = np.random.default_rng(1)
    base = rng.integers(50, 100, size=(30, 5, 1))
    for task, gap in (('ade20k', 0.008), ('coco', 0.004)):
        for seed in range(5):
            for method, hit in (('flora', 0.70 + gap), ('lora', 0.70)):
                hit += rng.normal(0, 0.01)  # the run's own level: seed noise the bootstrap sees
                inter = (base * (hit + rng.normal(0, 0.02, size=base.shape))).astype(np.int64)
                _test_run(tmp_path, method, seed, np.concatenate([inter, 2 * base - inter], axis=2), task=task)
    result = C.analyse(tmp_path, tasks=('ade20k', 'coco'), resamples=400)
    (small, large) = sorted(result['comparisons'], key=lambda r: r['p'])
    assert 0 < small['p'] <= large['p'] < 0.5  # neither adjustment is trivially 0 or capped
    assert small['holm_p'] == pytest.approx(min(1.0, 2 * small['p']))
    assert large['holm_p'] == pytest.approx(max(small['holm_p'], large['p']))


def test_the_run_files_fingerprint_names_every_test_run_and_changes_with_any_of_them(tmp_path):
    """Hand-made run files: the count is every test-split file of the tasks (repeats and default runs included,
    validation runs and other tasks not); the digest moves with one byte of one file, and with a file's name."""
    stats = np.ones((4, 2, 2), dtype=np.int64)
    _test_run(tmp_path, 'flora', 0, stats)
    _test_run(tmp_path, 'flora', 0, stats, repeat=1)
    _test_run(tmp_path, 'lora', 1, stats, folder='test_default')
    _test_run(tmp_path, 'lora', 1, stats, task='coco')
    _record(tmp_path, 1.0, 0.5, task='ade20k')  # a validation run: not part of it
    first = C.runs_fingerprint(tmp_path, ('ade20k', ))
    assert first.startswith('3 test-split run files, sha256 ') and len(first.split()[-1]) == 12
    assert C.runs_fingerprint(tmp_path, ('ade20k', 'coco')).startswith('4 ')
    path = tmp_path / 'test' / 'ade20k' / 'flora' / 's0.json'
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 0 '))
    second = C.runs_fingerprint(tmp_path, ('ade20k', ))
    assert second != first
    path.rename(path.with_name('s5.json'))
    assert C.runs_fingerprint(tmp_path, ('ade20k', )) not in (first, second)


def test_the_comparison_page_is_the_run_files():
    from flora_mm import docblocks
    page, out = ROOT / 'docs' / 'tuned_comparison.md', ROOT / 'results' / 'tuned'
    assert docblocks.read_block(page, 'tools/tuned_study.py', 'curves') == C.curves_table(out) + '\n'
    assert docblocks.read_block(page, 'tools/tuned_study.py', 'progress') == C.progress_table(out) + '\n'
    block = docblocks.read_block(page, 'tools/tuned_study.py', 'report')
    if not (out / 'test').exists():  # the report block is checked in full until test runs exist
        assert block == C.report(out) + '\n'
    else:  # then by the fingerprint of the run files it was generated from (the bootstrap is not redone here)
        assert block.endswith(f'From {C.runs_fingerprint(out)}.\n'), 'regenerate: tools/tuned_study.py report'


def test_progress_counts_what_the_protocol_still_needs(tmp_path):
    """Hand count on a made-up state: flora's grid done (selects x4), lora's two points in, nothing else."""
    for mult, value in {0.0625: .1, 0.25: .2, 1: .3, 4: .5, 16: .4}.items():
        _record(tmp_path, mult, value)
    for mult in (0.0625, 0.25):
        _record(tmp_path, mult, 0.2, method='lora')
    for path in (tmp_path / 'validation').rglob('*.json'):  # 4 minutes per validation run
        path.write_text(json.dumps(dict(json.loads(path.read_text()), minutes=4.0)))
    for seed, folder, minutes in ((0, 'test', 6.0), (1, 'test', 6.0), (0, 'test_default', 30.0)):
        path = tmp_path / folder / 'coco' / 'flora' / f's{seed}.json'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(seed=seed, lr_mult=4.0 if folder == 'test' else 1.0, minutes=minutes)))
    rows = {r['phase']: r for r in C.progress(tmp_path, ('coco', ))}
    tuned = [m for m in C.METHODS if m not in C.UNTUNED]
    assert (rows['validation']['done'], rows['validation']['to_run']) == (7, 3 + 5 * (len(tuned) - 2))
    assert rows['validation']['minutes'] == 4.0 and rows['validation']['at_least']
    assert (rows['test (tuned)']['done'], rows['test (tuned)']['to_run']) == (
        2, sum(len(s) for s in C.TEST_SEEDS.values()) - 2)
    # the median of the finished test runs, default ones included: the run slowed to 30 minutes does not count
    assert rows['test (tuned)']['minutes'] == 6.0
    assert rows['same-seed repeat']['to_run'] == 1
    # default runs: every tuned method but flora's still-missing seeds counted in full while selections are open
    n = len(C.DEFAULT_SEEDS)
    assert (rows['test (default x1)']['done'], rows['test (default x1)']['to_run']) == (1, n - 1 + n * (len(tuned) - 1))
    assert C.progress_table(tmp_path, ('coco', )).count('\n| coco |') == 4


def test_ranking_orders_by_test_mean_and_ties_what_the_top_does_not_clear(tmp_path):
    """Three adapters and Full on 4 seeds: DoRA clearly below FLoRA (not tied), LoRA a hair below (tied), Full a
    reference row (no lead computed). Means and sds recomputed here from the per-image counts; the top adapter is the
    best adapter, not Full."""
    rng = np.random.default_rng(5)
    base = rng.integers(50, 100, size=(40, 5, 1))
    runs = {}
    for method, hit in (('full', 0.90), ('flora', 0.80), ('lora', 0.7995), ('dora', 0.70)):
        for seed in range(4):
            inter = (base * (hit + rng.normal(0, 0.01, size=base.shape))).astype(np.int64)
            runs[(method, seed)] = np.concatenate([inter, 2 * base - inter], axis=2)
            _test_run(tmp_path, method, seed, runs[(method, seed)])

    def miou(stats):  # the oracle
        return 100 * float(np.mean(stats[..., 0].sum(0) / stats[..., 1].sum(0)))
    rows = C.ranking(tmp_path, 'ade20k', resamples=300)
    assert [r['method'] for r in rows[:2]] == ['full', 'flora'] and rows[-1]['method'] == 'dora'
    by = {r['method']: r for r in rows}
    for method in ('full', 'flora', 'lora', 'dora'):
        values = [miou(runs[(method, s)]) for s in range(4)]
        assert by[method]['mean'] == pytest.approx(np.mean(values))
        assert by[method]['sd'] == pytest.approx(np.std(values, ddof=1))
    assert {r['top'] for r in rows} == {'flora'} and by['full']['lead'] is None and by['flora']['tied']
    assert by['dora']['lead']['lo'] > 0 and not by['dora']['tied']
    assert by['lora']['lead']['lo'] <= 0 <= by['lora']['lead']['hi'] and by['lora']['tied']
    expected = np.mean([miou(runs[('flora', s)]) - miou(runs[('dora', s)]) for s in range(4)])
    assert by['dora']['lead']['mean'] == pytest.approx(expected)


PARAMS = {'ssb': 24163, 'ssl': 12523, 'lora': 1812336, 'flora': 1810529, 'dora': 1823976}
TASK_PARAMS = {t: PARAMS for t in ('coco', 'dota', 'ade20k')}


def _ties(tied: dict, untied=('dora', ), unknown=()) -> dict:
    """Per task: the named adapters tied, ``untied`` not (unless named), ``unknown`` not known yet."""
    return {t: {**dict.fromkeys(untied, False), **dict.fromkeys(names, True), **dict.fromkeys(unknown, None)}
            for t, names in tied.items()}


@pytest.mark.parametrize('tied, expected', [
    # common to all tasks, cheapest first (not alphabetical, not insertion order)
    ({'coco': {'lora', 'ssb', 'flora'}, 'dota': {'flora', 'ssb', 'lora', 'dora'}}, ['ssb', 'flora', 'lora']),
    ({'coco': {'lora'}, 'dota': {'flora'}}, []),             # nothing common
    ({'ade20k': {'dora', 'ssl'}}, ['ssl', 'dora']),          # one task: its own tied set
    ({}, []),
])
def test_shortlist_is_the_cheapest_first_intersection_of_the_tied_sets(tied, expected):
    assert C.shortlist(_ties(tied), TASK_PARAMS) == expected


def test_shortlist_orders_by_the_most_parameters_over_the_tasks_and_waits_for_unknown_ties():
    params = {'coco': PARAMS, 'dota': {**PARAMS, 'ssb': 2_000_000}}  # ssb costs most on dota
    assert C.shortlist(_ties({'coco': {'ssb', 'lora'}, 'dota': {'ssb', 'lora'}}), params) == ['lora', 'ssb']
    assert C.shortlist(_ties({'coco': {'ssb'}, 'dota': {'ssb'}}, unknown=('ssl', )), TASK_PARAMS) is None


def test_shortlist_sentence_names_parameters_or_falls_back_to_each_task():
    text = C.shortlist_sentence(_ties({'coco': {'lora', 'ssb'}, 'dota': {'ssb', 'lora'}}), TASK_PARAMS)
    assert 'ssb (24,163), lora (1,812,336).' in text and '(coco, dota)' in text
    text = C.shortlist_sentence(_ties({'coco': {'lora', 'ssl'}, 'dota': {'flora'}}), TASK_PARAMS)
    assert 'no adapter is tied' in text and 'coco: ssl, lora; dota: flora.' in text
    text = C.shortlist_sentence(_ties({'coco': {'lora'}, 'dota': {'lora'}}, unknown=('ssl', 'ssb')), TASK_PARAMS)
    assert 'not formed yet -- 4 adapter row(s)' in text


def test_readme_headline_is_the_run_files():
    """README's "Which method?" block is :func:`headline` of the committed run files (cheap until test runs exist)."""
    from flora_mm import docblocks
    out = ROOT / 'results' / 'tuned'
    block = docblocks.read_block(ROOT / 'README.md', 'tools/tuned_study.py', 'headline')
    if not (out / 'test').exists():
        assert block == C.headline(out, ROOT) + '\n'
    else:  # the fingerprint of the run files it was generated from
        assert block.endswith(f'From {C.runs_fingerprint(out)}.\n'), 'regenerate: tools/tuned_study.py report --readme'


def test_headline_lists_each_methods_trainable_parameters_and_the_claims(tmp_path):
    """The README block on made-up ADE20K runs: each row's trainable backbone parameters are the pre-registration's
    committed budget table (generated from the solver; its own test checks it against the solver now), and every claim
    has a row."""
    from flora_mm import docblocks
    rng = np.random.default_rng(6)
    base = rng.integers(50, 100, size=(20, 5, 1))
    for method, hit in (('flora', 0.8), ('ssl', 0.7)):
        for seed in range(2):
            inter = (base * (hit + rng.normal(0, 0.01, size=base.shape))).astype(np.int64)
            _test_run(tmp_path, method, seed, np.concatenate([inter, 2 * base - inter], axis=2), lr_mult=16.0)
    budgets = docblocks.read_block(ROOT / 'docs' / 'preregistration.md', 'tools/tuned_study.py', 'budgets')
    trainable = {line.split(' | ')[1]: line.split(' | ')[-1].rstrip(' |') for line in budgets.splitlines()
                 if line.startswith('| ade20k |')}
    text = C.headline(tmp_path, ROOT, tasks=('ade20k', ), resamples=200)
    rows = {line.split(' | ')[0].lstrip('| '): line.split(' | ') for line in text.splitlines() if line.startswith('| ')}
    assert rows['flora'][1] == trainable['flora'] and rows['ssl'][1] == trainable['ssl']
    assert rows['flora'][2] == 'x16' and rows['flora'][4].startswith('(top adapter)')
    assert rows['ssl'][4].rstrip(' |').endswith(']')  # a clear gap: no "tied"
    assert f'fewest trainable backbone parameters first: flora ({trainable["flora"]}).' in text  # ssl is not tied
    assert all(f'| {name} |' in text for name in C.CLAIMS) and 'test split: 20 images' in text
    assert '| unresolved (interim) |' in text and C.INTERIM_NOTE in text  # 2 seeds of the planned 5 or 10
    assert text.endswith('From 4 test-split run files, sha256 ' + C.runs_fingerprint(tmp_path, ('ade20k', ))[-12:] + '.')
    (tmp_path / 'test' / 'ade20k' / 'ssl' / 's1.json').unlink()  # one seed: its tie is unknown, no shortlist yet
    text = C.headline(tmp_path, ROOT, tasks=('ade20k', ), resamples=200)
    assert 'not formed yet -- 1 adapter row(s)' in text and 'fewest trainable' not in text

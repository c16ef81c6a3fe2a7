"""flora_mm.engine.tune as a library: search-space parsing, the learning-rate multiplier as the optimizer really
sees it, errors before training, grid exactness, resume after an interrupted or killed study, failed trials, the
pruning and divergence hooks. Trials here run a stand-in launcher that writes a validation record the way
mmengine's LocalVisBackend does; tests/test_tools/test_tune.py trains for real through tools/tune.py."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from flora_mm.engine.hooks import FiniteLossHook, OptunaPruningHook
from flora_mm.engine.tune import (LR_MULT, PRUNED_MARKER, SearchParam, Study, StudySettings, TrialFailed, apply_params,
                                  check_validation_split, count_validations, default_metric, edge_extension,
                                  run_extended_grid)
from tests.test_configs.smoke import ROOT

DEMO = ROOT / 'configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py'
SOURCE = ROOT / 'configs/source/mask-rcnn_convnextv2-atto_frozen_12e_source-coco.py'
METRIC = 'coco/bbox_mAP'


@pytest.mark.parametrize('text,expected', [
    ('backbone_lr_mult=log:0.1:10', SearchParam(LR_MULT, 'log', 0.1, 10.0)),
    ('model.backbone.adapter.rank=int:2:16', SearchParam('model.backbone.adapter.rank', 'int', 2, 16)),
    ('a.b=float:0:0.5', SearchParam('a.b', 'float', 0.0, 0.5)),
    ('model.backbone.adapter.type=choice:LoRA,FLoRA', SearchParam('model.backbone.adapter.type', 'choice',
                                                                  values=('LoRA', 'FLoRA'))),
    ('x=0.25,0.5,1', SearchParam('x', 'grid', values=(0.25, 0.5, 1))),
])
def test_search_params_parse(text, expected):
    assert SearchParam.parse(text) == expected


@pytest.mark.parametrize('text,message', [
    ('nopath', 'expected PATH='), ('x=log:0:1', 'LOW > 0'), ('x=float:2:1', 'LOW < HIGH'),
    ('x=log:1', 'needs LOW:HIGH'), ('x=1,2,1', 'repeats'),
])
def test_bad_search_params_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        SearchParam.parse(text)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.head = nn.Linear(2, 1)


@pytest.mark.parametrize('custom_keys', [None, {'backbone.1': dict(decay_mult=0.0)},
                                         {'backbone': dict(lr_mult=0.5)}])
def test_lr_mult_scales_every_backbone_parameter_and_no_head_parameter(custom_keys):
    """Oracle: the learning rates of the optimizer mmengine builds from the changed config."""
    base = 1e-3
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=base, weight_decay=1e-4),
                                         **({'paramwise_cfg': dict(custom_keys=custom_keys)} if custom_keys else {}))))
    apply_params(cfg, {LR_MULT: 4.0})
    model = _Tiny()
    wrapper_cfg = cfg.optim_wrapper.to_dict()
    wrapper = DefaultOptimWrapperConstructor(wrapper_cfg, wrapper_cfg.pop('paramwise_cfg', None))(model)
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    prior = (custom_keys or {}).get('backbone', {}).get('lr_mult', 1.0)
    for name, param in model.named_parameters():
        want = base * 4.0 * prior if name.startswith('backbone.') else base
        assert lr[id(param)] == pytest.approx(want), name


def test_objective_and_schedule_are_read_from_the_config():
    cfg = Config.fromfile(str(DEMO))
    assert default_metric(cfg) == METRIC
    assert count_validations(cfg) == 1
    cfg.merge_from_dict({'train_cfg.val_interval': 2})
    assert count_validations(cfg) == 3  # epochs 2, 4, 6
    cfg = Config(dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=10, val_interval=4)))
    assert count_validations(cfg) == 3  # iterations 4, 8 and the last


def test_a_config_validating_on_its_test_split_is_refused():
    check_validation_split(Config.fromfile(str(DEMO)))  # val2017 vs test2017: fine
    with pytest.raises(ValueError, match='same data as test_dataloader'):
        check_validation_split(Config.fromfile(str(SOURCE)))  # test_dataloader = val_dataloader


class FakeTraining:
    """Stands in for tools/train.py: reads the trial's config and writes the validation record mmengine would,
    with a metric peaked at lr_mult = 2 (or a failure / NaN for chosen values); records every call."""

    def __init__(self, fail_at=None, nan_at=None, interrupt_call=None):
        self.calls, self.fail_at, self.nan_at, self.interrupt_call = [], fail_at, nan_at, interrupt_call

    def __call__(self, config: Path, work_dir: Path, log: Path) -> None:
        cfg = Config.fromfile(str(config))
        mult = cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult
        self.calls.append(mult)
        if self.interrupt_call == len(self.calls):
            raise KeyboardInterrupt
        if mult == self.fail_at:
            raise TrialFailed('FloatingPointError: the loss diverged at iteration 3: loss = nan')
        value = math.nan if mult == self.nan_at else 0.5 - (math.log2(mult) - 1) ** 2 / 10
        run = work_dir / '20260101_000000' / 'vis_data'
        run.mkdir(parents=True)
        (run / 'scalars.json').write_text(json.dumps({METRIC: value, 'step': 1}) + '\n')


def _settings(tmp_path, grid='0.5,1,2,4', **kw):
    kw.setdefault('study_name', 'first')
    return StudySettings(config=DEMO, work_dir=tmp_path / 'study', params=[SearchParam.parse(f'{LR_MULT}={grid}')],
                         **kw)


def _states(study):
    return sorted((t.state.name, t.params[LR_MULT]) for t in study.study.get_trials())


def test_grid_mode_runs_exactly_the_grid_once_and_writes_the_best_config(tmp_path):
    fake = FakeTraining()
    study = Study(_settings(tmp_path), fake, log=lambda _: None)
    study.optimize()
    assert sorted(fake.calls) == [0.5, 1, 2, 4]
    Study(_settings(tmp_path), fake, log=lambda _: None).optimize()  # the same command again: nothing to do
    assert len(fake.calls) == 4
    summary = study.finish()
    assert summary['best_params'] == {LR_MULT: 2}
    best = Config.fromfile(summary['best_config'])
    assert best.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 2
    assert not any(h['type'] in ('OptunaPruningHook', 'FiniteLossHook') for h in best.custom_hooks)  # a plain config
    record = json.loads((tmp_path / 'study' / 'trial_0000' / 'trial.json').read_text())
    assert set(record) >= {'params', 'value', 'minutes', 'commit', 'seeds', 'state'}
    assert all(Path(p).stat().st_size > 0 for p in summary['plots']) and len(summary['plots']) == 2
    assert '0.5' in study.table() and 'complete' in study.table()


def test_failed_and_nan_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path):
    study = Study(_settings(tmp_path), FakeTraining(fail_at=4, nan_at=0.5), log=lambda _: None)
    study.optimize()
    trials = {t.params[LR_MULT]: t for t in study.study.get_trials()}
    assert trials[4].state.name == 'FAIL' and 'diverged' in trials[4].user_attrs['fail_reason']
    assert trials[0.5].state.name == 'FAIL' and 'nan' in trials[0.5].user_attrs['fail_reason']
    assert [trials[m].state.name for m in (1, 2)] == ['COMPLETE', 'COMPLETE']
    assert len(study.finished()) == 4 and study.study.best_trial.params[LR_MULT] == 2


def test_an_interrupted_study_resumes_without_repeating_a_finished_trial(tmp_path):
    first = FakeTraining(interrupt_call=2)
    with pytest.raises(KeyboardInterrupt):
        Study(_settings(tmp_path), first, log=lambda _: None).optimize()
    done, interrupted = first.calls
    study = Study(_settings(tmp_path), second := FakeTraining(), log=lambda _: None)
    assert len(study.finished()) == 1  # the interrupted trial is not counted as finished
    study.optimize()
    assert second.calls[0] == interrupted and done not in second.calls  # re-run first, the finished one never
    assert sorted([first.calls[0], *second.calls]) == [0.5, 1, 2, 4]
    assert [s for s, _ in _states(study)].count('COMPLETE') == 4


KILLED = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from flora_mm.engine.tune import SearchParam, Study, StudySettings
    from tests.test_engine.test_tune import DEMO, LR_MULT, FakeTraining
    class Hangs(FakeTraining):
        def __call__(self, config, work_dir, log):
            if len(self.calls) == 1:
                (work_dir.parent.parent / 'second_started').touch()
                time.sleep(600)
            super().__call__(config, work_dir, log)
    settings = StudySettings(config=DEMO, work_dir=Path(sys.argv[1]), heartbeat=1,
                             params=[SearchParam.parse(LR_MULT + '=0.5,1,2')])
    Study(settings, Hangs(), log=lambda _: None).optimize()
''')


@pytest.mark.subprocess
def test_a_killed_study_resumes_the_trial_whose_process_died(tmp_path):
    work = tmp_path / 'study'
    proc = subprocess.Popen([sys.executable, '-c', KILLED, str(work)], cwd=ROOT, start_new_session=True)
    deadline = time.time() + 120
    while not (work / 'second_started').exists():
        assert proc.poll() is None and time.time() < deadline, 'the study never started its second trial'
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3.5)  # the heartbeat grace period (3 beats of 1 s) passes
    settings = StudySettings(config=DEMO, work_dir=work, heartbeat=1, params=[SearchParam.parse(f'{LR_MULT}=0.5,1,2')])
    study = Study(settings, resumed := FakeTraining(), log=lambda _: None)
    first = json.loads((work / 'trial_0000' / 'trial.json').read_text())['params'][LR_MULT]
    study.optimize()
    assert first not in resumed.calls and len(resumed.calls) == 2
    states = _states(study)
    failed = [v for s, v in states if s == 'FAIL']
    assert failed == [resumed.calls[0]]  # the trial whose process died: failed, its parameters run first
    assert sorted(v for s, v in states if s == 'COMPLETE') == [0.5, 1, 2]


@pytest.mark.parametrize('param,message', [
    ('model.backbone.adapter.scael=log:1:8', r"model.backbone.adapter has \["),
    ('optim_wrapper.optimiser.lr=log:1e-4:1e-3', 'optim_wrapper has'),
])
def test_an_unknown_path_is_an_error_before_any_training(tmp_path, param, message):
    fake = FakeTraining()
    with pytest.raises(KeyError, match=message):
        Study(StudySettings(config=DEMO, work_dir=tmp_path, params=[SearchParam.parse(param)], n_trials=2), fake)
    assert fake.calls == [] and not (tmp_path / 'study.db').exists()


def test_grid_and_sampled_dimensions_do_not_mix(tmp_path):
    params = [SearchParam.parse(f'{LR_MULT}=1,2'), SearchParam.parse('model.backbone.adapter.scale=log:1:8')]
    with pytest.raises(ValueError, match='cannot be mixed'):
        Study(StudySettings(config=DEMO, work_dir=tmp_path, params=params), FakeTraining())


def test_a_rerun_with_another_search_space_is_refused(tmp_path):
    Study(_settings(tmp_path), FakeTraining(), log=lambda _: None)
    with pytest.raises(ValueError, match='created with other settings'):
        Study(_settings(tmp_path, grid='1,2'), FakeTraining(), log=lambda _: None)


def test_a_second_study_in_the_same_work_dir_is_refused_and_the_first_ones_trials_stay(tmp_path):
    Study(_settings(tmp_path, grid='0.5,1'), FakeTraining(), log=lambda _: None).optimize()
    first = (tmp_path / 'study' / 'trial_0000' / 'trial.json').read_text()
    second = FakeTraining()
    with pytest.raises(ValueError, match=r"holds the trials of study 'first'.*another --work-dir"):
        Study(_settings(tmp_path, grid='2,4', study_name='second'), second, log=lambda _: None)
    assert second.calls == [] and (tmp_path / 'study' / 'trial_0000' / 'trial.json').read_text() == first
    # the same study again is its owner (a rerun resumes); another work dir takes the second study
    Study(_settings(tmp_path, grid='0.5,1'), FakeTraining(), log=lambda _: None)
    Study(dataclasses.replace(_settings(tmp_path, grid='2,4', study_name='second'), work_dir=tmp_path / 'other'),
          second, log=lambda _: None).optimize()
    assert sorted(second.calls) == [2, 4] and (tmp_path / 'study' / 'trial_0000' / 'trial.json').read_text() == first


def test_a_work_dir_from_before_the_owner_record_is_adopted_only_without_another_study(tmp_path):
    Study(_settings(tmp_path, grid='0.5,1'), FakeTraining(), log=lambda _: None).optimize()
    (tmp_path / 'study' / 'study.json').unlink()  # as a work dir written before the record existed
    with pytest.raises(ValueError, match="holds the trials of study 'first'"):
        Study(_settings(tmp_path, grid='2,4', study_name='second'), FakeTraining(), log=lambda _: None)
    Study(_settings(tmp_path, grid='0.5,1'), FakeTraining(), log=lambda _: None)  # its own study: adopted
    assert json.loads((tmp_path / 'study' / 'study.json').read_text())['study_name'] == 'first'


@pytest.mark.parametrize('results,direction,factor,expected', [
    ({1: .3, 4: .5, 16: .4}, 'maximize', None, None),          # interior
    ({1: .3, 4: .4, 16: .5}, 'maximize', None, 64),            # top edge: one grid step beyond
    ({1: .5, 4: .4, 16: .3}, 'maximize', None, 0.25),          # bottom edge
    ({1: .5, 2: .4, 8: .3}, 'maximize', None, 0.5),            # the step is the outermost ratio on that side
    ({1: .3, 2: .4, 8: .5}, 'maximize', None, 32),
    ({1: .3, 4: .5, 16: None}, 'maximize', None, None),        # a failed point is the worst, not a missing one
    ({1: .3, 4: .5, 16: math.nan}, 'maximize', None, None),
    ({1: None, 4: None}, 'maximize', None, 0.25),              # nothing finished: the smallest wins the tie
    ({1: .5, 4: .5, 16: .2}, 'maximize', None, 0.25),          # tied best: the smallest point
    ({1: .3, 4: .1, 16: .2}, 'minimize', None, None),
    ({1: .1, 4: .2, 16: .3}, 'minimize', None, 0.25),
    ({1: .3, 4: .4, 16: .5}, 'maximize', 2.0, 32),             # an explicit factor
])
def test_edge_rule(results, direction, factor, expected):
    assert edge_extension(results, direction, factor) == expected


def test_edge_rule_refuses_a_grid_it_cannot_read():
    for results in ({1: .5}, {0: .1, 1: .2}, {-1: .1, 1: .2}):
        with pytest.raises(ValueError, match='at least two positive grid points'):
            edge_extension(results)


def test_an_extended_grid_adds_points_beyond_the_edge_until_its_best_is_interior(tmp_path):
    """FakeTraining peaks at lr_mult 2 (1 and 4 tie): a grid 1/16, 1/4 at its top edge is extended to 1, then 4,
    where the best (1, the smaller of the tie) is interior; a rerun trains nothing; the best config is the
    selection over every point, not the first study's best."""
    fake = FakeTraining()
    settings = _settings(tmp_path, grid='0.0625,0.25')
    grid = run_extended_grid(settings, fake, max_extensions=4, log=lambda _: None)
    assert sorted(fake.calls) == [0.0625, 0.25, 1, 4] and fake.calls[2:] == [1, 4]
    assert grid['selected'] == 1 and not grid['at_edge'] and grid['extensions'] == ['extend_1', 'extend_4']
    assert set(grid['results']) == {'0.0625', '0.25', '1', '4'}
    best = Config.fromfile(grid['best_config'])
    assert best.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 1
    assert json.loads((tmp_path / 'study' / 'grid.json').read_text())['selected'] == 1
    run_extended_grid(settings, fake, max_extensions=4, log=lambda _: None)
    assert len(fake.calls) == 4  # resumed: every study already finished


def test_an_extended_grid_still_at_an_edge_says_so(tmp_path):
    fake = FakeTraining()
    grid = run_extended_grid(_settings(tmp_path, grid='0.0625,0.25'), fake, max_extensions=1, log=lambda _: None)
    assert sorted(fake.calls) == [0.0625, 0.25, 1] and grid['selected'] == 1 and grid['at_edge']


@pytest.mark.parametrize('grid', ['1', '0,1', 'LoRA,DoRA'])
def test_an_extended_grid_needs_two_positive_numbers(tmp_path, grid):
    fake = FakeTraining()
    settings = dataclasses.replace(_settings(tmp_path), params=[SearchParam.parse(f'{LR_MULT}={grid}')])
    with pytest.raises(ValueError, match='at least two positive values'):
        run_extended_grid(settings, fake, max_extensions=2)
    assert fake.calls == []


@pytest.mark.slow
def test_fixed_budget_solves_the_rank_of_each_trial(tmp_path):
    settings = StudySettings(config=DEMO, work_dir=tmp_path, fixed_budget=True, n_trials=1,
                             params=[SearchParam.parse('model.backbone.adapter.kernel_rank=1,3')])
    study = Study(settings, FakeTraining())
    from flora_mm.models.budget import adapter_budget
    target = adapter_budget(study.cfg.model.backbone, study.cfg.model.backbone.adapter)[0]
    for kernel_rank in (1, 3):
        cfg = study.trial_config({'model.backbone.adapter.kernel_rank': kernel_rank}, seed=0)
        adapter = cfg.model.backbone.adapter

        def miss(rank):
            return abs(adapter_budget(cfg.model.backbone, {**adapter, 'rank': rank})[0] - target)
        assert miss(adapter.rank) <= min(miss(adapter.rank - 1), miss(adapter.rank + 1))  # the closest rank


def test_finite_loss_hook_names_the_diverged_terms():
    runner = SimpleNamespace(iter=6)
    FiniteLossHook().after_train_iter(runner, 0, outputs={'loss': torch.tensor(1.0), 'acc': torch.tensor(math.nan)})
    with pytest.raises(FloatingPointError, match=r'iteration 7: loss = nan, loss_cls = inf'):
        FiniteLossHook().after_train_iter(runner, 0, outputs={'loss': torch.tensor(math.nan),
                                                              'loss_cls': torch.tensor(math.inf),
                                                              'loss_bbox': torch.tensor(0.5)})


@pytest.mark.parametrize('value,pruned', [(0.1, True), (0.9, False)])
def test_pruning_hook_reports_and_stops_a_run_the_pruner_rejects(tmp_path, value, pruned):
    storage = f'sqlite:///{tmp_path / "s.db"}'
    study = optuna.create_study(storage=storage, study_name='s', direction='maximize')
    for v in (0.5, 0.6, 0.7):  # three finished trials at step 10: the median pruner's start-up
        study.add_trial(optuna.create_trial(value=v, intermediate_values={10: v}))
    trial = study.ask()
    runner = SimpleNamespace(iter=10, rank=0, work_dir=str(tmp_path), train_loop=SimpleNamespace(stop_training=False))
    hook = OptunaPruningHook(storage, 's', trial._trial_id, METRIC, pruner='median')
    hook.before_train(runner)
    hook.after_val_epoch(runner, {METRIC: value})
    assert optuna.load_study(study_name='s', storage=storage).trials[-1].intermediate_values == {10: value}
    assert runner.train_loop.stop_training is pruned
    assert (tmp_path / PRUNED_MARKER).exists() is pruned

"""tools/tune.py end to end on the demo's target config at test size: a 3-trial TPE study trains for real, prints
its table, writes non-empty plots; the best config a study writes trains with tools/train.py. The library's
behaviour (grid, resume, failures, pruning) is tested in tests/test_engine/test_tune.py."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from flora_mm.data import ensure_dataset
from flora_mm.engine.tune import LR_MULT, SearchParam, Study, StudySettings
from tests.test_configs.smoke import ROOT
from tests.test_engine.test_tune import DEMO, FakeTraining

QUICK = {'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1, 'default_hooks.checkpoint.interval': 1}


def _data(root):
    ensure_dataset('make_coco', root / 'data/target_coco', num_train=8, num_val=4, num_test=4, img_size=64, seed=0,
                   shift=True)


@pytest.mark.subprocess
def test_tpe_study_trains_three_trials_and_draws_its_plots(tmp_path):
    _data(tmp_path)
    study = tmp_path / 'study'
    cmd = [sys.executable, str(ROOT / 'tools/tune.py'), str(DEMO), '--n-trials', '3',
           '--param', f'{LR_MULT}=log:0.5:2', 'model.backbone.adapter.scale=log:1:8', '--work-dir', str(study),
           '--threads', '1', '--cfg-options', *(f'{k}={v}' for k, v in QUICK.items())]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = json.loads((study / 'trials.json').read_text())
    assert [t['state'] for t in trials] == ['COMPLETE'] * 3 and len({t['params'][LR_MULT] for t in trials}) == 3
    assert '[tune] trial 2 complete' in proc.stdout and '3/3' in proc.stdout
    best = json.loads((study / 'best.json').read_text())
    assert best['best_value'] == max(t['value'] for t in trials)
    assert len(best['plots']) == 2
    for plot in best['plots']:
        image = Image.open(plot)
        assert image.width > 100 and len(set(image.convert('L').getdata())) > 2  # drawn, not blank


@pytest.mark.subprocess
def test_the_best_config_trains(tmp_path):
    _data(tmp_path)
    settings = StudySettings(config=DEMO, work_dir=tmp_path / 'study', params=[SearchParam.parse(f'{LR_MULT}=1,2')],
                             cfg_options=QUICK)
    study = Study(settings, FakeTraining(), log=lambda _: None)
    study.optimize()
    best = study.finish()['best_config']
    run = subprocess.run([sys.executable, str(ROOT / 'tools/train.py'), best, '--work-dir', str(tmp_path / 'best')],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / 'best' / 'last_checkpoint').exists()


def _tool(monkeypatch, fake):
    """tools/tune.py as a module, its trials run by ``fake``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('tune_tool', ROOT / 'tools/tune.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, 'subprocess_launcher', lambda *a, **k: fake)
    return tool


def test_the_tool_warns_when_a_grid_ends_at_an_edge_and_extends_it_on_request(tmp_path, monkeypatch, capsys):
    """FakeTraining peaks at lr_mult 2: the grid 0.25, 0.5 ends at its top edge (a warning); with --extend the
    tool adds 1, 2 and 4 and selects 2, interior (no warning)."""
    common = [str(DEMO), '--work-dir', str(tmp_path / 'plain')]
    _tool(monkeypatch, FakeTraining()).main([*common, '--grid', f'{LR_MULT}=0.25,0.5'])
    assert 'WARNING: the best value is at an edge of the grid' in capsys.readouterr().out
    fake = FakeTraining()
    _tool(monkeypatch, fake).main([str(DEMO), '--work-dir', str(tmp_path / 'extended'), '--grid',
                                  f'{LR_MULT}=0.25,0.5', '--extend', '4'])
    out = capsys.readouterr().out
    assert f'selected over the grid and 3 extension(s): {LR_MULT}=2,' in out and 'WARNING' not in out
    assert fake.calls[2:] == [1, 2, 4]
    with pytest.raises(SystemExit):
        _tool(monkeypatch, fake).parse_args([str(DEMO), '--extend', '2'])  # --extend without a grid


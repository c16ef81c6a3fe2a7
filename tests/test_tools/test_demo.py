"""tools/demo.py --quick: zero-shot, Base, FLoRA and Full through tools/test.py / tools/train.py from the shipped
source detector, one summary.json in the documented shape, the picture of predictions; --spread over seeds."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from flora_mm.engine import demo
from tests.test_configs.smoke import ROOT


@pytest.mark.subprocess
def test_quick_demo_writes_summary_and_picture(tmp_path):
    """Zero-shot (tools/test.py) and one fine-tuning run (tools/train.py) end to end; Base and Full are the same
    path with other --cfg-options (their budgets: the next test)."""
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/demo.py'), '--quick', '--root', str(tmp_path),
                           '--work-dir', str(tmp_path / 'work'), '--runs', 'Zero-shot', 'FLoRA'],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'work' / 'summary.json').read_text())
    assert list(summary['runs']) == ['Zero-shot', 'FLoRA']
    for run in summary['runs'].values():
        assert set(run) >= {'bbox_mAP', 'segm_mAP', 'trainable_backbone_params', 'minutes'}
    assert summary['runs']['Zero-shot']['trainable_backbone_params'] == 0
    assert summary['runs']['FLoRA']['trainable_backbone_params'] == demo.trainable_backbone_params(demo.RUNS['FLoRA'])
    assert summary['minutes'] >= sum(run['minutes'] for run in summary['runs'].values())
    picture = Image.open(tmp_path / 'work' / summary['picture'])
    assert picture.width == 2 * 64 * 3  # zero-shot, FLoRA, ground truth at twice the size
    assert 'Zero-shot' in proc.stdout and 'trainable backbone params' in proc.stdout
    assert 'COCO mAP (%) on 4 target images' in proc.stdout  # what --quick evaluated, not the full demo's 64


def test_the_demo_runs_and_their_budgets():
    assert list(demo.RUNS) == ['Base', 'FLoRA', 'Full']
    params = {name: demo.trainable_backbone_params(overrides) for name, overrides in demo.RUNS.items()}
    assert 0 < params['Base'] < params['FLoRA'] < params['Full']


@pytest.mark.subprocess
def test_unknown_runs_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/demo.py'), '--quick', '--root', str(tmp_path),
                           '--runs', 'FLoRA', 'LoRA'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown run(s) ['LoRA']" in proc.stderr


def test_cfg_options_put_another_adapter_in_floras_place():
    runs = demo.fine_tuning_runs({'model.backbone.adapter.type': 'SSB'})
    assert list(runs) == ['Base', 'SSB', 'Full'] and runs['SSB'] == {'model.backbone.adapter.type': 'SSB'}
    assert demo.fine_tuning_runs({}) == demo.RUNS
    budget = demo.trainable_backbone_params(runs['SSB'])
    assert 0 < budget < demo.trainable_backbone_params(demo.RUNS['FLoRA'])  # per-channel scales: fewer than FLoRA's


def test_spread_summarises_seeds(tmp_path):
    for seed, (base, flora) in enumerate([(30.0, 40.0), (32.0, 44.0)]):
        run = tmp_path / f'seed{seed}'
        run.mkdir()
        runs = {name: dict(bbox_mAP=v, segm_mAP=v + 1, trainable_backbone_params=p, minutes=1.0)
                for name, v, p in (('Base', base, 1200), ('FLoRA', flora, 217000))}
        (run / 'summary.json').write_text(json.dumps(dict(runs=runs, seed=seed)))
    table = demo.spread([tmp_path / 'seed0', tmp_path / 'seed1'])
    assert '2 seeds (0, 1)' in table
    assert '| Base | 1,200 | 31.0 (30.0 - 32.0) | 32.0 (31.0 - 33.0) |' in table
    assert '| FLoRA | 217,000 | 42.0 (40.0 - 44.0) | 43.0 (41.0 - 45.0) |' in table
    assert '| FLoRA - Base | +11.0 (+10.0 - +12.0) | +11.0 (+10.0 - +12.0) |' in table  # paired by seed


def test_readme_demo_numbers_are_the_committed_runs():
    """The README's demo table is tools/demo.py's table of results/demo/seed0.json, and its three-seed block is
    tools/demo.py --spread over results/demo/seed*.json (regenerate them there)."""
    from flora_mm import docblocks
    runs = sorted((ROOT / 'results' / 'demo').glob('seed[0-9].json'))
    assert [p.name for p in runs] == ['seed0.json', 'seed1.json', 'seed2.json']
    readme = ROOT / 'README.md'
    assert docblocks.read_block(readme, 'tools/demo.py', 'spread') == demo.spread(runs) + '\n'
    # the printed table is the cold fresh-clone run the README quotes: the same numbers, its own minutes column
    printed = [line.rsplit(None, 1)[0] for line in demo.table(json.loads(runs[0].read_text())).splitlines()]
    lines = [line.rsplit(None, 1)[0] for line in readme.read_text().splitlines() if line.strip()]
    start = lines.index(printed[0])
    assert lines[start:start + len(printed)] == printed


def test_an_unknown_run_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError,
                       match=r"unknown run\(s\) \['Nope'\]; choose from \['Zero-shot', 'Base', 'FLoRA', 'Full'\]"):
        demo.run(tmp_path / 'work', tmp_path, names=['FLoRA', 'Nope'])
    assert not any(tmp_path.iterdir())  # no data generated, no work dir

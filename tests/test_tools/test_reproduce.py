"""tools/reproduce.py --quick: every run goes through tools/train.py, is resumable and aggregated."""
import json
import subprocess
import sys

import pytest

from tests.test_configs.smoke import ROOT
from tests.test_tools import load_tool


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp('base') / 'base.pth'
    subprocess.run([sys.executable, str(ROOT / 'tools/pretrain_base.py'), '--out', str(out), '--steps', '1',
                    '--batch', '2', '--img-size', '32'], check=True, capture_output=True, timeout=300)
    return out


def _reproduce(out, base, *args):
    return subprocess.run([sys.executable, str(ROOT / 'tools/reproduce.py'), '--quick', '--out', str(out),
                           '--base-checkpoint', str(base), *args], capture_output=True, text=True, timeout=900)


def test_quick_grid_runs_resumes_and_aggregates(tmp_path, base):
    # the cheapest task keeps this test short; the detection pipelines are covered by the smoke tests
    proc = _reproduce(tmp_path, base, '--tasks', 'ade20k', '--methods', 'base', 'lora', 'flora', '--seeds', '0')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / 'runs' / 'ade20k').glob('*.json')}
    assert set(results) == {'base_s0', 'lora_s0', 'flora_s0'}
    assert 'mIoU' in results['flora_s0']['metrics']
    lora, flora = results['lora_s0']['budget'], results['flora_s0']['budget']
    assert results['base_s0']['budget']['backbone_trainable'] == 0
    assert abs(flora['backbone_trainable'] - lora['backbone_trainable']) <= 0.05 * lora['backbone_trainable']
    assert (tmp_path / results['flora_s0']['config']).read_text().startswith('_base_')
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert {(s['task'], s['method']) for s in summary} == {('ade20k', m) for m in ('base', 'lora', 'flora')}
    assert '| flora |' in (tmp_path / 'summary.md').read_text()

    again = _reproduce(tmp_path, base, '--tasks', 'ade20k', '--methods', 'flora', '--seeds', '0')
    assert again.returncode == 0 and 'training' not in again.stdout  # finished runs are skipped


def test_aggregate_orders_sweeps_numerically_and_plots_them(tmp_path):
    reproduce = load_tool('reproduce')
    runs = tmp_path / 'runs' / 'dota'
    runs.mkdir(parents=True)
    budget = dict(backbone_trainable=1000, percent=1.0)
    grid = [('lora', 0, 0.03), ('flora', 0, 0.02), ('flora', 1, 0.04)]
    sweep = [('flora-rank16', 0, 0.05), ('flora-rank2', 0, 0.01), ('flora-scale0.25', 0, 0.02)]
    for method, seed, value in grid + sweep:
        (runs / f'{method}_s{seed}.json').write_text(json.dumps(dict(
            task='dota', run=f'{method}_s{seed}', method=method, seed=seed, budget=budget,
            metrics={'dota/mAP': value}, minutes=1.0)))
    table = reproduce.aggregate(tmp_path)
    rows = [line for line in table.splitlines() if line.startswith('| ') and 'method' not in line]
    order = [row.split('|')[1].strip() for row in rows]
    assert order == ['lora', 'flora', 'flora-rank2', 'flora-rank16', 'flora-scale0.25']
    assert '| flora | 1,000 | 1.00 | 2 | 3.00 ± 1.41 | 0, 1 |' in table
    assert (tmp_path / 'sweeps.png').stat().st_size > 1000

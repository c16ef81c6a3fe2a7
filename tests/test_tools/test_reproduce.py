"""tools/reproduce.py: runs go through tools/train.py / tools/test.py from the shipped source models, resume, and
aggregate into paired differences with t intervals."""
import json
import subprocess
import sys

import pytest

from tests.test_configs.smoke import ROOT
from tests.test_tools import load_tool

reproduce = load_tool('reproduce')


def _reproduce(out, *args):
    return subprocess.run([sys.executable, str(ROOT / 'tools/reproduce.py'), '--quick', '--out', str(out),
                           '--root', str(out / 'root'), *args], capture_output=True, text=True, timeout=900)


def test_quick_runs_resume_and_aggregate(tmp_path):
    # the cheapest task keeps this test short; the detection pipelines are covered by the smoke tests
    proc = _reproduce(tmp_path, '--tasks', 'ade20k', '--methods', 'zero_shot', 'base', 'lora', 'flora',
                      '--seeds', '0', '1')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / 'runs' / 'ade20k').glob('*.json')}
    assert set(results) == {'zero_shot_s0', 'base_s0', 'lora_s0', 'flora_s0', 'base_s1', 'lora_s1', 'flora_s1'}
    assert all('mIoU' in r['metrics'] and r['commit'] and r['quick'] for r in results.values())
    lora, flora = results['lora_s0']['budget'], results['flora_s0']['budget']
    assert results['zero_shot_s0']['budget']['backbone_trainable'] == 0
    # Base trains only the detector's new output norms of the backbone (2 x channels per returned stage)
    assert results['base_s0']['budget']['backbone_trainable'] == 2 * (40 + 80 + 160 + 320)
    assert abs(flora['backbone_trainable'] - lora['backbone_trainable']) <= 0.05 * lora['backbone_trainable']
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert {(m['task'], m['method']) for m in summary['methods']} == {
        ('ade20k', m) for m in ('zero_shot', 'base', 'lora', 'flora')}
    assert {(p['a'], p['b']) for p in summary['pairs']} == {('flora', 'lora'), ('flora', 'base'), ('lora', 'base')}

    again = _reproduce(tmp_path, '--tasks', 'ade20k', '--methods', 'flora', '--seeds', '0')
    assert again.returncode == 0 and '[ade20k] flora_s0 ...' not in again.stdout  # finished runs are skipped


def _write(out, task, method, seed, value, repeat=0):
    runs = out / 'runs' / task
    runs.mkdir(parents=True, exist_ok=True)
    name = f'{method}_s{seed}' + (f'_r{repeat}' if repeat else '')
    (runs / f'{name}.json').write_text(json.dumps(dict(
        task=task, method=method, seed=seed, repeat=repeat, budget=dict(backbone_trainable=10, backbone_params=100),
        metrics={'dota/mAP': value}, minutes=1.0)))


def test_paired_differences_and_intervals_against_the_t_formula(tmp_path):
    lora = {0: 0.10, 1: 0.20, 2: 0.30}
    flora = {0: 0.11, 1: 0.22, 2: 0.33}  # differences 1, 2, 3 points: mean 2, sd 1
    for seed in lora:
        _write(tmp_path, 'dota', 'lora', seed, lora[seed])
        _write(tmp_path, 'dota', 'flora', seed, flora[seed])
    _write(tmp_path, 'dota', 'base', 0, 0.05)  # one seed only: no pair with base
    _write(tmp_path, 'dota', 'flora', 0, 0.12, repeat=1)
    reproduce.aggregate(tmp_path)
    summary = json.loads((tmp_path / 'summary.json').read_text())
    (pair, ) = summary['pairs']
    t975_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5% quantile (tables)
    half = t975_2 * 1.0 / 3 ** 0.5
    assert (pair['a'], pair['b'], pair['seeds']) == ('flora', 'lora', [0, 1, 2])
    assert pair['mean'] == pytest.approx(2.0)
    assert pair['ci95'] == pytest.approx([2.0 - half, 2.0 + half])
    assert pair['verdict'] == 'not resolved'  # the interval [-0.48, 4.48] holds 0
    (rep, ) = summary['repeats']
    assert rep['difference'] == pytest.approx(1.0)
    flora_row = next(m for m in summary['methods'] if m['method'] == 'flora')
    assert flora_row['values'] == pytest.approx([11.0, 22.0, 33.0])  # the repeat is not a seed

"""tools/reproduce.py: real runs from the shipped source models, resumed and aggregated (the study's library:
tests/test_engine/test_paired_study.py)."""
import json
import os
import subprocess
import sys

import pytest

from tests.test_configs.smoke import ROOT


def _reproduce(out, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')  # the threads a run records must not depend on the caller's shell
    return subprocess.run([sys.executable, str(ROOT / 'tools/reproduce.py'), '--quick', '--out', str(out),
                           '--root', str(out / 'root'), *args], capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.subprocess
def test_quick_runs_resume_and_aggregate(tmp_path):
    # the cheapest task and one seed keep this test short (four real runs, two at a time); the detection
    # pipelines are covered by the smoke tests, the pairing and intervals by the synthetic run files below
    proc = _reproduce(tmp_path, '--tasks', 'ade20k', '--methods', 'zero_shot', 'base', 'lora', 'flora',
                      '--seeds', '0', '--jobs', '2')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / 'runs' / 'ade20k').glob('*.json')}
    assert set(results) == {'zero_shot_s0', 'base_s0', 'lora_s0', 'flora_s0'}
    assert all('mIoU' in r['metrics'] and r['commit'] and r['quick'] and r['threads'] == 1 for r in results.values())
    lora, flora = results['lora_s0']['budget'], results['flora_s0']['budget']
    assert results['zero_shot_s0']['budget']['backbone_trainable'] == 0
    # Base trains only the detector's new output norms of the backbone (2 x channels per returned stage)
    assert results['base_s0']['budget']['backbone_trainable'] == 2 * (40 + 80 + 160 + 320)
    assert abs(flora['backbone_trainable'] - lora['backbone_trainable']) <= 0.05 * lora['backbone_trainable']
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert {(m['task'], m['method']) for m in summary['methods']} == {
        ('ade20k', m) for m in ('zero_shot', 'base', 'lora', 'flora')}
    assert summary['cost']['ade20k']['runs'] == 4
    assert summary['short']['ade20k'] == {'base': 1, 'lora': 1, 'flora': 1}  # zero-shot needs one

    again = _reproduce(tmp_path, '--tasks', 'ade20k', '--methods', 'flora', '--seeds', '0')
    assert again.returncode == 0 and '[ade20k] flora_s0 ...' not in again.stdout  # finished runs are skipped

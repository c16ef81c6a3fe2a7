"""tools/benchmark.py: runs, and writes the JSON / markdown / PNG it promises (the harness itself:
tests/test_benchmark/test_harness.py)."""
import json
import subprocess
import sys

import pytest

from tests.test_configs.smoke import ROOT

METHODS = {'input_grad_bound', 'full', 'bitfit', 'lora', 'dora', 'flora', 'infer_base', 'infer_flora_merged'}
RATIOS = {'flora_vs_lora_time', 'flora_vs_bound_time', 'flora_vs_bound_mem', 'dora_vs_lora_time',
          'merged_vs_base_infer_time', 'flora_vs_lora_flop', 'flora_vs_lora_time_floor'}


@pytest.mark.subprocess
def test_quick_benchmark_report(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/benchmark.py'), '--quick', '--json', str(out),
                           '--route-policy', 'cost_model'],  # routes by rule: deterministic, and no timing runs
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report['results']) == METHODS
    for values in report['results'].values():
        assert values['step_ms'] > 0 and values['peak_mb'] >= 0 and values['saved_mb'] >= 0
    results = report['results']
    assert results['flora']['saved_mb'] > results['input_grad_bound']['saved_mb'] > 0
    # full fine-tuning adds one weight gradient per layer to the bound's forward + input gradient: ~1.5x
    assert 1.4 < results['full']['gflop'] / results['input_grad_bound']['gflop'] < 1.6
    assert report['setup']['gemm_gflops'] > 0
    assert RATIOS <= set(report['ratios'])
    budgets = report['results']
    assert abs(budgets['flora']['adapter_params'] / budgets['lora']['adapter_params'] - 1) < 0.02
    assert report['merged_max_abs_diff'] <= 1e-4
    assert out.with_suffix('.md').read_text().count('|') > 20 and out.with_suffix('.png').stat().st_size > 1000


@pytest.mark.subprocess
def test_sequential_internvit_run_reports_routes_and_setup(tmp_path):
    out = tmp_path / 'vit.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/benchmark.py'), '--arch', 'internvit-tiny', '--img',
                           '28x42', '--batch', '1', '--reps', '1', '--warmup', '1', '--amp', 'bf16', '--base-dtype',
                           'bf16', '--with-cp', '--sequential', '--skip-memory', '--methods', 'lora', 'flora',
                           'infer_base', 'infer_flora_merged', '--json', str(out), '--gemm-n', '256'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['setup']['amp'] == 'bf16' and report['setup']['sequential'] and report['setup']['with_cp']
    assert set(report['results']) == {'lora', 'flora', 'infer_base', 'infer_flora_merged'}
    n_linear = 4 * 4  # 4 blocks x (qkv, proj, fc1, fc2)
    assert sum(report['results']['flora']['routes'].values()) == n_linear
    assert set(report['ratios']) >= {'flora_vs_lora_time', 'merged_vs_base_infer_time'}
    assert report['merged_max_abs_diff'] < 1e-2  # bf16 autocast on both sides

"""tools/benchmark.py --quick: runs, and writes the JSON / markdown / PNG it promises."""
import json
import subprocess
import sys

from tests.test_configs.smoke import ROOT

METHODS = {'input_grad_bound', 'full', 'bitfit', 'lora', 'dora', 'flora', 'infer_base', 'infer_flora_merged'}
RATIOS = {'flora_vs_lora_time', 'flora_vs_bound_time', 'flora_vs_bound_mem', 'dora_vs_lora_time',
          'merged_vs_base_infer_time'}


def test_quick_benchmark_report(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/benchmark.py'), '--quick', '--json', str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report['results']) == METHODS
    for values in report['results'].values():
        assert values['step_ms'] > 0 and values['peak_mb'] >= 0
    assert RATIOS <= set(report['ratios'])
    budgets = report['results']
    assert abs(budgets['flora']['adapter_params'] / budgets['lora']['adapter_params'] - 1) < 0.02
    assert report['merged_max_abs_diff'] <= 1e-4
    assert out.with_suffix('.md').read_text().count('|') > 20 and out.with_suffix('.png').stat().st_size > 1000

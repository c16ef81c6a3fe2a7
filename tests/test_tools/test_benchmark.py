"""tools/benchmark.py --quick: runs, and writes the JSON / markdown / PNG it promises."""
import json
import subprocess
import sys

import pytest

from tests.test_configs.smoke import ROOT
from tests.test_tools import load_tool

METHODS = {'input_grad_bound', 'full', 'bitfit', 'lora', 'dora', 'flora', 'infer_base', 'infer_flora_merged'}
RATIOS = {'flora_vs_lora_time', 'flora_vs_bound_time', 'flora_vs_bound_mem', 'dora_vs_lora_time',
          'merged_vs_base_infer_time', 'flora_vs_lora_flop', 'flora_vs_lora_time_floor'}


def test_quick_benchmark_report(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/benchmark.py'), '--quick', '--json', str(out)],
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


def test_cpu_peak_counts_live_tensors_only():
    import torch
    from torch.profiler import ProfilerActivity, profile
    benchmark = load_tool('benchmark')
    x = torch.randn(500, 500)  # allocated before: not counted
    mb = 500 * 500 * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = x @ x
        b = a * 2
        del a  # a and b were live together: peak 2 tensors
        c = b + 1
        d = c * 3  # b, c, d live together: peak 3 tensors
        del b, c, d
    assert abs(benchmark.live_bytes_peak(prof.events()) - 3 * mb) < 1024


def test_saved_bytes_counts_activations_kept_for_parameter_gradients():
    from types import SimpleNamespace

    import torch
    benchmark = load_tool('benchmark')
    x = torch.randn(64, 32, requires_grad=True)
    frozen = torch.nn.Linear(32, 16).requires_grad_(False)
    trained = torch.nn.Linear(32, 16)
    # A frozen layer needs only its (excluded) weight for the input gradient; a trained one keeps its input too.
    assert benchmark.saved_bytes(SimpleNamespace(method='lora', model=frozen, x=x)) == 0
    assert benchmark.saved_bytes(SimpleNamespace(method='lora', model=trained, x=x)) == x.numel() * 4
    assert benchmark.saved_bytes(SimpleNamespace(method='infer_base', model=trained, x=x)) == 0


def test_control_methods_train_what_they_claim():
    """The ``--controls``: rank-1 adapters on every layer, the depthwise weights alone, FLoRA checkpointed and
    FLoRA at LoRA's rank."""
    from argparse import Namespace

    import torch
    benchmark = load_tool('benchmark')
    args = Namespace(arch='atto', device='cpu', rank=8, flora_rank=40, kernel_rank=2)
    model, params = benchmark.build('dw_weights', args)
    depthwise = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 12 and {id(p) for p in params} == {id(w) for w in depthwise}
    lora, lora_r1, flora_r1 = (benchmark.build(m, args)[1] for m in ('lora', 'lora_r1', 'flora_r1'))
    assert 0 < sum(p.numel() for p in lora_r1) < sum(p.numel() for p in lora) / 4
    assert flora_r1 and all(p.shape[-1] == 1 for p in flora_r1)  # every factor and core has rank 1
    (flora, flora_params), (flora_cp, flora_cp_params) = (benchmark.build(m, args) for m in ('flora', 'flora_cp'))
    assert flora_cp.with_cp and not flora.with_cp  # the same adapters, recomputed per block
    assert [p.shape for p in flora_cp_params] == [p.shape for p in flora_params]
    flora_at_lora_rank = benchmark.build('flora_at_lora_rank', args)[0]
    assert max(m.ranks[0] for m in flora_at_lora_rank.modules() if hasattr(m, 'ranks')) == 8


@pytest.mark.parametrize('groups', [1, 4, 16])
def test_flop_count_of_conv_training_step_is_three_forwards(groups):
    """Forward, input gradient and weight gradient of a convolution each cost one forward's arithmetic, grouped
    or not (torch's own formula counts a grouped weight gradient ``groups`` times)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    benchmark = load_tool('benchmark')
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        conv(x)
    assert benchmark.flop_count(lambda: conv(x).sum().backward()) == 3 * forward.get_total_flops()

"""flora_mm.benchmark.harness: what each method trains, its memory and arithmetic counters against independent
counts (profiler events by hand, autograd's saved tensors, one forward's FLOPs)."""
import pytest

from flora_mm.adapters import adapted_layers
from flora_mm.benchmark import harness as benchmark


def test_cpu_peak_counts_live_tensors_only():
    import torch
    from torch.profiler import ProfilerActivity, profile
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
    x = torch.randn(64, 32, requires_grad=True)
    frozen = torch.nn.Linear(32, 16).requires_grad_(False)
    trained = torch.nn.Linear(32, 16)
    # A frozen layer needs only its (excluded) weight for the input gradient; a trained one keeps its input too.

    def step(method, model):
        return SimpleNamespace(method=method, model=model, forward=lambda: model(x))
    assert benchmark.saved_bytes(step('lora', frozen)) == 0
    assert benchmark.saved_bytes(step('lora', trained)) == x.numel() * 4
    assert benchmark.saved_bytes(step('infer_base', trained)) == 0


def bench_args(**kw):
    return benchmark.Settings(**{**dict(arch='atto', img='32', batch=1), **kw})


@pytest.mark.parametrize('arch, amp, base', [('internvit-tiny', 'bf16', 'bf16'), ('atto', 'bf16', 'bf16'),
                                             ('atto', 'fp16', 'fp32')])
@pytest.mark.slow
def test_amp_steps_keep_fp32_trainables_and_a_low_precision_base(arch, amp, base):
    """Every method trains one step under autocast, the frozen base stored in ``base`` (bf16: InternViT-6B
    style); the optimizer's parameters stay fp32, fp16 goes through a GradScaler, inference keeps fp32 weights."""
    import torch
    args = bench_args(arch=arch, amp=amp, base_dtype=base, with_cp=True, img='28' if 'vit' in arch else '32')
    for method in benchmark.TRAIN + benchmark.INFER:
        step = benchmark.Step(method, args)
        out = step()
        assert all(torch.isfinite(t).all() for t in (out if isinstance(out, tuple) else (out, ))), method
        params = list(step.model.parameters())
        trainable = [p for p in params if p.requires_grad]
        assert all(p.dtype == torch.float32 for p in trainable), method
        frozen_dtypes = {p.dtype for p in params if not p.requires_grad}
        expected = {torch.float32} if method in benchmark.INFER or base == 'fp32' else {torch.bfloat16}
        assert frozen_dtypes <= expected, (method, frozen_dtypes)
        assert (step.scaler is not None) == (amp == 'fp16' and bool(trainable) and method not in benchmark.INFER)
        if method in ('lora', 'flora'):
            assert sum(step.routes().values()) > 0 and 'auto' not in step.routes()  # measured at the first step
    vit = benchmark.build('flora', args)[0]
    if 'vit' in arch:  # the paper's InternViT adapter: Linear layers only, s = 0.04
        assert all(isinstance(m, torch.nn.Linear) for _, m in adapted_layers(vit))
        assert {m.scale for _, m in adapted_layers(vit)} == {0.04}


def test_control_methods_train_what_they_claim():
    """The ``--controls``: rank-1 adapters on every layer, the depthwise weights alone, FLoRA checkpointed and
    FLoRA at LoRA's rank."""
    import torch
    args = bench_args(arch='atto', flora_rank=40)
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
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        conv(x)
    assert benchmark.flop_count(lambda: conv(x).sum().backward()) == 3 * forward.get_total_flops()


@pytest.mark.parametrize('method, layer, count', [
    ('trilora', 'TriLoRA', None), ('ia3', 'IA3', None), ('ssl', 'SSL', None), ('ssb', 'SSB', None),
    ('lora_mpc_o', 'LoRA', None), ('lora_mpc_n', 'LoRALinear', None)])
def test_subspace_methods_build_and_step(method, layer, count):
    """Each subspace-tuning method trains one step in the harness; the MPC_o step's loss includes the regulariser."""
    import torch
    from flora_mm.adapters import adapted_layers, mpc_loss
    args = bench_args()
    model, params = benchmark.build(method, args)
    names = {type(m).__name__ for _, m in adapted_layers(model)}
    assert params and names and all(n.startswith(layer) for n in names), names
    step = benchmark.Step(method, args)
    torch.manual_seed(0)
    out = step()
    assert torch.isfinite(out)
    expected_mpc = method == 'lora_mpc_o'
    assert (mpc_loss(step.model) is not None) == expected_mpc

"""The adapter optimizer-wrapper constructor and the frozen-set check hook, on a toy mmengine model."""
import json

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import flora_mm.mm  # noqa: F401
from flora_mm.adapters import adapted_layers, adapter_parameters, inject_adapters
from flora_mm.engine import DeltaWeightStatsHook, FrozenParamsCheckHook, check_frozen, delta_stats
from tests.logcapture import logged


class ToyModel(BaseModel):
    def __init__(self, adapter=None, tamper=None):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 2)
        self.tamper = tamper
        if adapter:
            inject_adapters(self.backbone, adapter)

    def forward(self, inputs, labels=None, mode='tensor'):
        feats = self.backbone(inputs).mean((2, 3))
        logits = self.head(feats)
        if mode == 'loss':
            weight = self.backbone[0].weight
            if self.tamper == 'value':  # a bug that writes into a frozen weight
                with torch.no_grad():
                    weight.add_(1.0)
            elif self.tamper == 'requires_grad':  # a bug that unfreezes it (not in the optimizer: value unchanged)
                weight.requires_grad_(True)
            elif self.tamper == 'grad':  # a bug that leaves a gradient on it
                weight.grad = torch.zeros_like(weight)
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return logits


class ToyData(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 8, 8, generator=g), labels=torch.tensor(i % 2))


def build(model, paramwise_cfg=None):
    cfg = dict(type='AdapterOptimWrapperConstructor',
               optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)))
    if paramwise_cfg is not None:
        cfg['paramwise_cfg'] = paramwise_cfg
    return OPTIM_WRAPPER_CONSTRUCTORS.build(cfg)(model)


def test_only_trainable_params_in_one_group_and_summarylogged():
    model = ToyModel(adapter=dict(type='FLoRA', rank=2))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    wrapper, messages = logged(lambda: build(model))
    groups = wrapper.optimizer.param_groups
    assert len(groups) == 1 and {id(p) for p in groups[0]['params']} == trainable
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    summary = [m for m in messages if m.startswith('AdapterOptimWrapperConstructor')]
    assert len(summary) == 1 and f'{n_trainable:,} trainable parameters in 1 group(s)' in summary[0]
    # the per-module table: the adapted backbone's frozen count and the head's trainable count
    rows = {line.split()[0]: line.split()[1:] for line in summary[0].splitlines()[2:]}
    assert rows['backbone'][1] == f'{n_frozen:,}'
    assert rows['head'][0] == f'{sum(p.numel() for p in model.head.parameters()):,}'


def test_paramwise_cfg_kept_groups_merged_and_no_per_parameter_flood():
    model = ToyModel(adapter=dict(type='FLoRA', rank=2))
    wrapper, messages = logged(
        lambda: build(model, dict(custom_keys={'flora_core': dict(lr_mult=10.0)}, bias_decay_mult=0.0)))
    groups = wrapper.optimizer.param_groups
    by_lr = {g['lr']: g for g in groups}
    assert set(by_lr) == {1e-3, 1e-2}
    assert all(p.shape == (2, 2, 2, 2) for p in by_lr[1e-2]['params'])  # exactly the FLoRA cores
    assert sum(len(g['params']) for g in groups) == sum(p.requires_grad for p in model.parameters())
    assert len(groups) == 3  # default, cores x10, biases without decay
    assert not any('paramwise_options' in m or 'requires_grad=False' in m for m in messages)
    assert any('trainable' in m and 'frozen' in m and 'adapter' in m for m in messages)


@pytest.mark.parametrize('adapter,custom_keys,expected', [
    (dict(type='FLoRA', rank=2, lr_mult=8), None, 8e-3),                           # the config's multiplier
    (dict(type='FLoRA', rank=2, lr_mult=8), {'backbone': dict(lr_mult=2.0)}, 1.6e-2),  # times paramwise_cfg's
    (dict(type='IA3', lr_mult=0.5), None, 5e-4),
    (dict(type='BitFit', lr_mult=4), None, 4e-3),                                  # base biases it unfroze
    (dict(type='FLoRA', rank=2), None, 1e-3),                                      # the method's default: 1
])
def test_adapter_lr_mult_scales_what_the_adapter_trains_and_nothing_else(adapter, custom_keys, expected):
    model = ToyModel(adapter=adapter)
    wrapper, messages = logged(lambda: build(model, dict(custom_keys=custom_keys) if custom_keys else None))
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    trained = adapter_parameters(model.backbone)
    assert trained and all(lr[id(p)] == pytest.approx(expected) for p in trained.values())
    assert all(lr[id(p)] == pytest.approx(1e-3) for p in model.head.parameters())  # the head keeps the base lr
    noted = [m for m in messages if 'its lr_mult' in m]
    assert len(noted) == (expected != pytest.approx(1e-3) and 'lr_mult' in adapter)


@pytest.mark.parametrize('value,error', [(0, ValueError), (-2, ValueError), (float('inf'), ValueError),
                                         ('8', TypeError), (True, TypeError)])
def test_a_bad_adapter_lr_mult_is_refused(value, error):
    from flora_mm.adapters import AdapterConfig
    with pytest.raises(error, match='lr_mult'):
        AdapterConfig.from_dict(dict(type='LoRA', lr_mult=value))


def test_refuses_base_weights_trainable_again():
    model = ToyModel(adapter=dict(type='LoRA', rank=2))
    model.backbone[0].weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"trainable again.*'backbone.0.weight'"):
        build(model)
    with pytest.raises(RuntimeError, match='trainable again'):
        check_frozen(model)


def _run(tmp_path, model, strict=True):
    runner = Runner(model=model, work_dir=str(tmp_path), train_dataloader=dict(
        dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=4, num_workers=0,
        collate_fn=dict(type='default_collate')), optim_wrapper=dict(
            constructor='AdapterOptimWrapperConstructor', optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=dict(by_epoch=False, max_iters=2), custom_hooks=[dict(type='FrozenParamsCheckHook', strict=strict)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None), default_scope=None,
        experiment_name=tmp_path.name)  # runners started in the same second would share logger and visualizer
    runner.train()
    return runner


def test_hook_passes_on_a_correct_run_and_base_is_unchanged(tmp_path):
    model = ToyModel(adapter=dict(type='FLoRA', rank=2))
    before = model.backbone[0].weight.clone()
    _run(tmp_path, model)
    assert torch.equal(model.backbone[0].weight, before)
    assert model.backbone[0].flora_core.abs().sum() > 0


@pytest.mark.parametrize('tamper', ['value', 'requires_grad', 'grad'])
def test_hook_raises_when_a_frozen_weight_is_touched(tmp_path, tamper):
    with pytest.raises(RuntimeError, match=r'frozen parameters were changed.*backbone.0.weight'):
        _run(tmp_path, ToyModel(adapter=dict(type='FLoRA', rank=2), tamper=tamper))


def test_non_strict_hook_logs_the_touched_and_the_gradient_less_parameters(tmp_path):
    model = ToyModel(adapter=dict(type='FLoRA', rank=2), tamper='value')
    model.unused = nn.Parameter(torch.zeros(3))  # trainable, never on the forward path
    _run(tmp_path, model, strict=False)
    log = next(tmp_path.glob('*/*.log')).read_text().splitlines()
    assert any(' ERROR ' in line and "frozen parameters were changed" in line and 'backbone.0.weight' in line
               for line in log)
    assert any(' WARNING ' in line and "received no gradient" in line and "'unused'" in line for line in log)


class DeadAdapterModel(ToyModel):
    """An adapter whose branch is multiplied by 0 before the loss (what ``scale=0`` did): its parameters get
    gradients, all exactly zero."""

    def forward(self, inputs, labels=None, mode='tensor'):
        out = super().forward(inputs, labels, mode)
        if mode == 'loss':
            dead = sum(p.sum() for n, p in adapter_parameters(self.backbone).items() if n.startswith('2.'))
            out['loss'] = out['loss'] + 0.0 * dead
        return out


def test_hook_reports_parameters_whose_gradient_is_exactly_zero(tmp_path):
    model = DeadAdapterModel(adapter=dict(type='LoRA', rank=2))
    model.backbone[2].forward = lambda x: nn.functional.conv2d(x, model.backbone[2].weight, model.backbone[2].bias,
                                                               padding=1)  # the adapter of layer 2 is bypassed
    _run(tmp_path, model)
    log = next(tmp_path.glob('*/*.log')).read_text()
    dead = sorted(f'backbone.{n}' for n in adapter_parameters(model.backbone) if n.startswith('2.'))
    assert f"{len(dead)} trainable parameters received only exactly-zero gradients in the first 2 iterations" in log
    assert all(f"'{n}'" in log for n in dead)
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert f'{n_trainable - len(dead)}/{n_trainable} trainable parameters got non-zero gradients' in log


def test_zero_gradients_at_step_one_by_design_are_not_reported(tmp_path):
    """FLoRA's factors get exactly zero gradient while the core is 0 (step 1), non-zero after one step."""
    model = ToyModel(adapter=dict(type='FLoRA', rank=2))
    _run(tmp_path, model)
    log = next(tmp_path.glob('*/*.log')).read_text()
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert f'{n_trainable}/{n_trainable} trainable parameters got non-zero gradients in the first 2 iterations' in log
    assert 'exactly-zero' not in log


def test_hooks_are_registered_and_buildable_from_config():
    from mmengine.registry import HOOKS
    for name, cls in (('FrozenParamsCheckHook', FrozenParamsCheckHook), ('DeltaWeightStatsHook', DeltaWeightStatsHook)):
        assert HOOKS.get(name) is cls
        assert type(HOOKS.build(dict(type=name))) is cls


@pytest.mark.parametrize('method', ['FLoRA', 'LoRA', 'DoRA'])
def test_delta_stats_match_a_direct_computation(method):
    torch.manual_seed(0)
    layer = inject_adapters(nn.Conv2d(6, 8, 3), dict(type=method, rank=2))
    with torch.no_grad():
        for p in layer.adapter_parameters().values():
            p.add_(torch.randn_like(p) * 0.3)
    fro, amp = delta_stats(layer, rank=2)
    delta = (layer.merged_weight() - layer.weight).detach().reshape(8, -1)
    u, s, vh = torch.linalg.svd(delta.double())
    expected_fro = delta.double().norm().item()
    projected = u[:, :2].T @ layer.weight.detach().double().reshape(8, -1) @ vh[:2].T
    assert fro == pytest.approx(expected_fro, rel=1e-4)
    assert amp == pytest.approx(expected_fro / projected.norm().item(), rel=1e-3)


def test_delta_stats_hook_logs_to_the_visualizer_and_the_text_log(tmp_path):
    model = ToyModel(adapter=dict(type='FLoRA', rank=2))
    runner = Runner(model=model, work_dir=str(tmp_path), train_dataloader=dict(
        dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=4, num_workers=0,
        collate_fn=dict(type='default_collate')), optim_wrapper=dict(
            constructor='AdapterOptimWrapperConstructor', optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=dict(by_epoch=False, max_iters=4), custom_hooks=[dict(type='DeltaWeightStatsHook', interval=2)],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)), default_scope=None,
        experiment_name=tmp_path.name)  # runners started in the same second would share logger and visualizer
    runner.train()
    records = [json.loads(line) for line in next(tmp_path.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    delta = [r for r in records if 'delta/mean_fro' in r]
    assert [r['step'] for r in delta] == [1, 2, 4]  # after the first iteration, then every 2
    final = {name: delta_stats(layer)[0] for name, layer in adapted_layers(model)}
    assert delta[-1]['delta/backbone.0/fro'] == pytest.approx(final['backbone.0'])
    assert delta[-1]['delta/mean_fro'] == pytest.approx(sum(final.values()) / len(final))
    assert delta[-1]['delta/mean_amp'] > 0 and delta[0]['delta/mean_fro'] < delta[-1]['delta/mean_fro']
    logged = [r for r in records if 'delta_mean_fro' in r]
    assert logged and logged[-1]['delta_mean_fro'] == pytest.approx(delta[-1]['delta/mean_fro'])


@pytest.mark.parametrize('constructor,adapter,lr', [
    ('DefaultOptimWrapperConstructor', dict(type='LoRA', rank=2), "the LoRA method's default"),  # LoRA's 0.25
    ('DefaultOptimWrapperConstructor', dict(type='FLoRA', rank=2, lr_mult=4), "its config's"),
    ('DefaultOptimWrapperConstructor', dict(type='LoRA', rank=2, lr_mult=1), 1e-3),  # x1 asked for: nothing lost
    ('DefaultOptimWrapperConstructor', None, 1e-3),                                  # no adapter: Full
    ('AdapterOptimWrapperConstructor', dict(type='LoRA', rank=2), 2.5e-4),
])
def test_a_constructor_that_ignores_lr_mult_refuses_adapters_that_want_one(constructor, adapter, lr):
    """mmengine's own path (build_optim_wrapper, as the Runner builds it): another constructor would train the
    adapter at the optimizer's rate, so it refuses, naming where the multiplier comes from and the fix."""
    from mmengine.optim import build_optim_wrapper
    from flora_mm.adapters.methods import METHODS
    assert METHODS['LoRA'].lr_mult == 0.25  # the declared default this test leans on (flora_mm.engine.defaults)
    model = ToyModel(adapter=adapter)
    cfg = dict(type='OptimWrapper', constructor=constructor, optimizer=dict(type='SGD', lr=1e-3))
    if isinstance(lr, str):
        with pytest.raises(ValueError, match=f"lr_mult .*{lr}.*DefaultOptimWrapperConstructor.*constructor="):
            build_optim_wrapper(model, cfg)
        return
    wrapper = build_optim_wrapper(model, cfg)
    lrs = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    trained = adapter_parameters(model.backbone).values() if adapter else model.backbone.parameters()
    assert all(lrs[id(p)] == pytest.approx(lr) for p in trained)


@pytest.mark.subprocess
@pytest.mark.parametrize('first', ['flora_mm.engine', 'flora_mm.models', 'flora_mm.mm'])
def test_any_first_import_of_the_mm_parts_installs_the_guard(first):
    """Each entry imported first in a fresh process (engine -> models -> mm -> engine is a cycle) ends with the
    constructor registered and the guard on mmengine's constructor registry and mmdet's, created later."""
    import subprocess
    import sys
    code = (f'import {first}\nimport mmdet.registry\nfrom mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as R\n'
            'for r in (R, mmdet.registry.OPTIM_WRAPPER_CONSTRUCTORS):\n'
            '    assert r.build_func._refuses_adapter_lr_mult and "AdapterOptimWrapperConstructor" in R.module_dict\n'
            'print("guarded")')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'guarded' in proc.stdout, proc.stderr[-2000:]

"""The tuned, pre-registered comparison (``docs/preregistration.md``; command line: ``tools/tuned_study.py``).

Every method that trains backbone parameters gets the same search: the learning rate of what it trains, as a
multiplier on the target config's AdamW learning rate (:data:`LR_GRID`, factor 4 apart), run through
:mod:`flora_mm.engine.tune`'s grid mode on the validation split with one seed per point; heads and neck keep the
config's setting. Rank-based methods are held at the budget of :data:`REFERENCE` by the budget solver (within
:data:`BUDGET_TOLERANCE`). The selected point is the best validation value; if it lies at an edge of the grid the
grid is extended on that side (:func:`extension`) before any test run. Test runs read the test split once, at
the selected setting only (:func:`selected_lr_mult` refuses otherwise), and, as pre-registered, once more at the
untuned protocol's setting (:data:`DEFAULT_LR_MULT`) to show how much of each default-setting verdict survives tuning.

Every run file records split, seed, threads, route policy, commit (and whether the tree was dirty), the budget,
and the resolved config the run trained.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from mmengine.config import Config

from .analysis import (bbox_map, coco_stats, dota_stats, holm, image_draws, metric_on_draws, miou, n_images,
                       paired_resampled, rbox_map, segmentation_stats, t_interval)
from .targets import TASKS
from .runs import environment, git
from .tune import LR_MULT, SearchParam, Study, StudySettings, edge_extension, subprocess_launcher

__all__ = ['ADAPTERS', 'analyse', 'batch_order', 'BRACKET', 'budget_table', 'BUDGET_TOLERANCE', 'CLAIMS', 'compare',
           'CURVE_PANELS', 'curves_figure', 'curves_table', 'DEFAULT_LR_MULT', 'DEFAULT_SEEDS', 'dump_run',
           'extension', 'headline', 'heldout_runs', 'LR_GRID', 'method_config', 'method_overrides', 'METHODS',
           'NoInteriorOptimum', 'PlannedRun', 'plot_curves', 'preregistration_commit', 'PRIMARY', 'progress',
           'progress_table', 'ranking', 'REFERENCE', 'report', 'RESAMPLED_CACHE', 'RUN_ENV', 'run_test_split',
           'run_validation', 'runs_fingerprint', 'SECONDARY', 'SECONDARY_KEPT', 'selected_lr_mult', 'shortlist',
           'shortlist_sentence', 'test_methods', 'test_order', 'test_run_path', 'TEST_SEEDS', 'undecided',
           'validation_records', 'VALIDATION_SEED', 'validation_settings', 'validation_study', 'verdict',
           'without_interior_optimum']

ADAPTER = 'model.backbone.adapter'
#: The budget every rank-based method is solved to: LoRA r = 16 (r = 2, 4 and 8 cannot hold FLoRA and DoRA within
#: 1% of LoRA with integer ranks; see docs/preregistration.md).
REFERENCE = dict(type='LoRA', rank=16, scale=1.0)
BUDGET_TOLERANCE = 0.01
SOLVE = 'solve'  # a rank solved to REFERENCE's budget
#: method -> the target config's adapter replaced by these options (None: no adapter), and frozen stages
METHODS: dict[str, dict[str, Any]] = {
    'base': dict(adapter=None, frozen_stages=4),
    'full': dict(adapter=None),
    'bitfit': dict(adapter=dict(type='BitFit')),
    'lora': dict(adapter=REFERENCE),
    'dora': dict(adapter=dict(type='DoRA', rank=SOLVE, scale=1.0)),
    'flora': dict(adapter=dict(type='FLoRA', rank=SOLVE, kernel_rank=2, scale=4.0)),
    # the kernel_rank question: the depthwise 7x7 kernels' modes at full rank (r3 = 7) instead of the paper's 2
    'flora_k7': dict(adapter=dict(type='FLoRA', rank=SOLVE, kernel_rank=7, scale=4.0)),
    'trilora': dict(adapter=dict(type='TriLoRA', rank=SOLVE, scale=1.0)),
    'ia3': dict(adapter=dict(type='IA3')),
    'ssl': dict(adapter=dict(type='SSL')),
    'ssb': dict(adapter=dict(type='SSB')),
    'lora_mpc_o': dict(adapter=dict(REFERENCE, mpc='orthogonal', mpc_weight=0.1)),
    'lora_mpc_d': dict(adapter=dict(REFERENCE, mpc='diagonal', mpc_weight=0.1)),
    'lora_mpc_n': dict(adapter=dict(type='LoRA', rank=SOLVE, scale=1.0, mpc='nonlinear', targets=['linear'])),
}
#: Methods with nothing to tune in the backbone (Base trains heads only): one run per seed, no grid.
UNTUNED = ('base', )
#: The learning-rate multipliers every tuned method is validated at (x the config's AdamW 2e-4).
LR_GRID = (0.0625, 0.25, 1.0, 4.0, 16.0)
GRID_FACTOR = 4.0
MAX_EXTENSIONS = 4  # grid points added beyond LR_GRID before the selection gives up (an error, not a choice)
VALIDATION_SEED = 100
#: Deterministic runs: fixed threads, rule-based adapter routes (no timing-dependent choice).
RUN_ENV = {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2', 'FLORA_MM_ROUTE_POLICY': 'cost_model'}


def _solved_adapter(cfg: Config, adapter: Mapping[str, Any]) -> dict:
    adapter = dict(adapter)
    if adapter.get('rank') == SOLVE:
        backbone = {k: v for k, v in cfg.model.backbone.to_dict().items() if k != 'adapter'}
        adapter['rank'] = _solve(json.dumps(backbone, sort_keys=True, default=str), str(cfg.get('default_scope')),
                                 json.dumps({**adapter, 'rank': 1}, sort_keys=True))
    return adapter


@functools.lru_cache(maxsize=None)
def _solve(backbone: str, scope: str, adapter: str) -> int:
    """The rank of ``adapter`` on ``backbone`` (JSON) closest to REFERENCE's budget; cached, since the three targets
    share their backbone and every caller (overrides, budget table) asks again."""
    from mmengine.registry import init_default_scope
    from ..models.budget import adapter_budget, solve_rank
    init_default_scope(None if scope == 'None' else scope)
    backbone_cfg = json.loads(backbone)
    return solve_rank(backbone_cfg, json.loads(adapter), adapter_budget(backbone_cfg, REFERENCE)[0])[0]


def method_overrides(task: str, method: str, root: Path) -> dict:
    """``--cfg-options`` that turn the task's target config into ``method`` (ranks solved to the budget)."""
    if method not in METHODS:
        raise KeyError(f'unknown method {method!r}; choose from {sorted(METHODS)}')
    spec = METHODS[method]
    overrides: dict[str, Any] = {}
    if spec['adapter'] is None:
        overrides[ADAPTER] = None
    else:
        cfg = Config.fromfile(str(root / TASKS[task]['config']))
        # at x1 of the backbone's rate before the grid multiplies it, whatever the method's declared lr_mult
        overrides[ADAPTER] = dict(_delete_=True, **_solved_adapter(cfg, spec['adapter']), lr_mult=1.0)
    if 'frozen_stages' in spec:
        overrides['model.backbone.frozen_stages'] = spec['frozen_stages']
    return overrides


def method_config(task: str, method: str, root: Path) -> Config:
    """The task's target config turned into ``method`` (:func:`method_overrides` merged)."""
    cfg = Config.fromfile(str(root / TASKS[task]['config']))
    cfg.merge_from_dict(method_overrides(task, method, root))
    return cfg


def budget_table(root: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    """Markdown: per task and method, the solved rank, the trainable backbone parameters and the gap to the
    reference budget (the pre-registration's budget table, generated)."""
    from mmengine.registry import init_default_scope
    from ..models.budget import adapter_budget, trainable_parameters
    lines = ['| task | method | adapter rank | adapter parameters | vs LoRA r=16 | trainable backbone |',
             '|---|---|---:|---:|---:|---:|']
    for task in tasks:
        target = Config.fromfile(str(root / TASKS[task]['config']))
        init_default_scope(target.get('default_scope'))
        reference = adapter_budget(target.model.backbone, REFERENCE)[0]
        for method in METHODS:
            cfg = method_config(task, method, root)
            adapter = cfg.model.backbone.get('adapter')
            count = adapter_budget(cfg.model.backbone, adapter)[0] if adapter else 0
            gap = f'{100 * (count / reference - 1):+.2f}%' if adapter and 'rank' in adapter else '-'
            lines.append(f'| {task} | {method} | {adapter.get("rank", "-") if adapter else "-"} | {count:,} | {gap} '
                         f'| {trainable_parameters(cfg.model.backbone)[0]:,} |')
    return '\n'.join(lines)


def _portable(text: str, *roots: Path) -> str:
    """``text`` with the machine's repository / workspace paths made relative (run files are committed)."""
    for root in roots:
        text = text.replace(f'{Path(root).resolve()}/', '').replace(f'{root}/', '')
    return text


def _provenance(root: Path) -> dict:
    """What every run file records of how it ran: threads, route policy, commit, whether the code was dirty, and the
    environment (:func:`~flora_mm.engine.runs.environment`: CPU, kernel instruction set, package versions)."""
    return dict(threads=int(RUN_ENV['OMP_NUM_THREADS']), route_policy=RUN_ENV['FLORA_MM_ROUTE_POLICY'],
                commit=git(root, 'rev-parse', 'HEAD'),
                dirty=bool(git(root, 'status', '--porcelain', '--', 'flora_mm', 'configs', 'tools')),
                environment=environment())


def _run_file(out: Path, task: str, method: str, root: Path, record: dict) -> None:
    """The committed record of one validation run (``out/validation/<task>/<method>/lr<mult>_s<seed>.json``)."""
    mult = record['params'][LR_MULT]
    configs = record.get('configs') or []
    resolved = _portable(Path(configs[0]).read_text(), root) if configs and Path(configs[0]).exists() else None
    data = dict(task=task, method=method, split='val', lr_mult=mult, seeds=record['seeds'],
                state=record.get('state'), metric=record['metric'], value=record.get('value'),
                fail_reason=record.get('fail_reason'), minutes=record.get('minutes'), **_provenance(root),
                overrides={k: repr(v) for k, v in method_overrides(task, method, root).items()},
                resolved_config=resolved)
    path = out / 'validation' / task / method / f'lr{mult:g}_s{record["seeds"][0]}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_run(data))


def dump_run(data: Mapping[str, Any]) -> str:
    """A run file's text: ``json.dumps(data, indent=1)``, except that per-image statistics (``image_stats``) are
    written one row -- an image, a detection -- per line instead of one number per line (a detection test run has
    thousands of rows). ``json.loads`` gives ``data`` back."""
    if data.get('image_stats') is None:
        return json.dumps(data, indent=1) + '\n'
    placeholder = json.dumps(dict(data, image_stats=None), indent=1)
    head, tail = placeholder.split('"image_stats": null', 1)
    return head + '"image_stats": ' + _rows(data['image_stats'], ' ') + tail + '\n'


def _rows(value: Any, indent: str) -> str:
    inner = indent + ' '
    if isinstance(value, Mapping):
        items = [f'{inner}{json.dumps(k)}: {_rows(v, inner)}' for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + f'\n{indent}}}' if items else '{}'
    rows = [inner + json.dumps(row, separators=(',', ':')) for row in value]
    return '[\n' + ',\n'.join(rows) + f'\n{indent}]' if rows else '[]'


def validation_settings(task: str, method: str, root: Path, grid: tuple[float, ...] = LR_GRID,
                        quick: bool = False) -> StudySettings:
    """The tune study of (task, method)'s validation grid: in ``root/work_dirs/tuned/<task>/<method>/`` for
    :data:`LR_GRID`; any other grid (an extension, the rest of an interrupted grid) in a folder of its own below it
    (one work dir per study: trial dirs are numbered per study)."""
    if method in UNTUNED:
        raise ValueError(f'{method} trains no backbone parameter: it has no learning-rate grid')
    spec = TASKS[task]
    name = f'{method}_grid' + ''.join(f'_{g:g}' for g in grid)
    work_dir = root / 'work_dirs' / 'tuned' / ('quick' if quick else 'full') / task / method
    return StudySettings(
        config=root / spec['config'], work_dir=work_dir if tuple(grid) == LR_GRID else work_dir / name,
        params=[SearchParam(LR_MULT, 'grid', values=tuple(grid))], metric=spec['metric'],
        seeds=(VALIDATION_SEED, ), pruner='none', study_name=name,
        cfg_options={**method_overrides(task, method, root), **(spec['quick'] if quick else {})})


def validation_study(task: str, method: str, root: Path, out: Path, grid: tuple[float, ...] = LR_GRID,
                     quick: bool = False, log=print) -> Study:
    """The validation grid of (task, method) as a resumable tune study (:func:`validation_settings`), each finished
    trial also written to ``out/validation/`` (the files the selection reads and git keeps)."""
    settings = validation_settings(task, method, root, grid, quick)
    launch = subprocess_launcher(cwd=root, env=RUN_ENV)
    return Study(settings, launch, log=log, on_record=lambda r: _run_file(out, task, method, root, r))


def validation_records(out: Path, task: str, method: str) -> list[dict]:
    """The finished validation runs of (task, method), by learning-rate multiplier."""
    folder = out / 'validation' / task / method
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob('lr*_s*.json'))] if folder.exists() else []
    return sorted(runs, key=lambda r: r['lr_mult'])


def _value(run: dict) -> float:
    value = run.get('value')
    return value if run.get('state') == 'COMPLETE' and value is not None and math.isfinite(value) else -math.inf


class NoInteriorOptimum(RuntimeError):
    """The best validation value is still at an edge of the grid after :data:`MAX_EXTENSIONS` extensions: the
    method is reported as such and not tested at a tuned setting (pre-registration, section 3)."""


def extension(out: Path, task: str, method: str) -> tuple[float, ...]:
    """The next grid points the selection rule needs: none when the best validation value is interior; else the
    point one factor beyond the edge it sits on (a failed / diverged point counts as worst). Raises
    :class:`NoInteriorOptimum` when the extensions are used up."""
    runs = validation_records(out, task, method)
    done = {r['lr_mult'] for r in runs}
    missing = tuple(g for g in LR_GRID if g not in done)
    if missing:
        return missing
    point = edge_extension({r['lr_mult']: _value(r) for r in runs}, factor=GRID_FACTOR)
    if point is None:
        return ()
    if len(done) >= len(LR_GRID) + MAX_EXTENSIONS:
        best = max(runs, key=_value)['lr_mult']
        raise NoInteriorOptimum(f'{task}/{method}: the best validation value is still at the edge lr_mult '
                                f'{best:g} after {MAX_EXTENSIONS} extensions of the grid: no tuned test '
                                f'run (reported as such); inspect the runs')
    return (point, )


def selected_lr_mult(out: Path, task: str, method: str) -> float:
    """The validation study's choice for (task, method); refuses while the grid is incomplete or its best point
    is at an edge (a test run at any other setting is refused by construction)."""
    if method in UNTUNED:
        return 1.0
    pending = extension(out, task, method)
    if pending:
        raise RuntimeError(f'{task}/{method}: the validation study has not selected a setting yet (still to run: '
                           f'lr_mult {", ".join(f"{g:g}" for g in pending)}); tools/tuned_study.py validate')
    return max(validation_records(out, task, method), key=_value)['lr_mult']


def run_validation(task: str, method: str, root: Path, out: Path, quick: bool = False, log=print) -> float:
    """Run (or resume) the validation grid of (task, method), extending it until its best point is interior; the
    selected multiplier."""
    while pending := extension(out, task, method):
        study = validation_study(task, method, root, out, grid=pending, quick=quick, log=log)
        study.optimize()
        keep_plots(study, out, task, method)
    return selected_lr_mult(out, task, method)


def keep_plots(study: Study, out: Path, task: str, method: str) -> list[Path]:
    """Finish a validation study (best config, Optuna's plots in its work dir) and copy its plots to
    ``out/plots/<task>_<method>[_<grid>]_<plot>.png`` (the main grid without the grid in the name)."""
    import shutil
    grid = tuple(study.settings.params[0].values)
    tag = f'{task}_{method}' + ('' if grid == LR_GRID else '_' + '_'.join(f'{g:g}' for g in grid))
    kept = []
    for plot in study.finish().get('plots', []):
        target = out / 'plots' / f'{tag}_{Path(plot).name}'
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, target)
        kept.append(target)
    return kept


#: The paired test seeds (docs/preregistration.md, section 4).
TEST_SEEDS = {**{m: tuple(range(5)) for m in METHODS}, **{m: tuple(range(10)) for m in ('flora', 'lora', 'dora')}}
#: The untuned protocol's setting, at which every tuned method is also tested on DEFAULT_SEEDS (section 5: "tuned vs
#: default"; no extra run where validation selected it: those tuned runs are the default runs). Seeds 0-2, not the
#: first protocol's 0-4: the compute cut of amendment A3, made before any test-split run.
DEFAULT_LR_MULT = 1.0
DEFAULT_SEEDS = tuple(range(3))
#: test-split settings -> the folder of their run files under ``out``
SETTINGS = {'tuned': 'test', 'default': 'test_default'}
PREREGISTRATION = 'docs/preregistration.md'


def preregistration_commit(root: Path) -> str:
    """The commit that first added the pre-registration; refuses while it is missing or has uncommitted edits
    (test-split runs must follow a committed protocol)."""
    first = git(root, 'log', '--diff-filter=A', '--format=%H', '--', PREREGISTRATION).splitlines()
    if not first:
        raise RuntimeError(f'{PREREGISTRATION} is not committed: no test-split run before the pre-registration')
    if git(root, 'status', '--porcelain', '--', PREREGISTRATION):
        raise RuntimeError(f'{PREREGISTRATION} has uncommitted changes: commit them before a test-split run (once a '
                           f'test run exists, list them under "Changes after the first test run")')
    return first[-1]


def without_interior_optimum(out: Path, task: str, method: str) -> bool:
    """Whether (task, method)'s grid ended with its best point still at an edge (no tuned test runs)."""
    try:
        extension(out, task, method)
    except NoInteriorOptimum:
        return True
    return False


def _tuned_at_default(out: Path, task: str, method: str) -> bool:
    """Whether the tuned runs of (task, method) are its default runs: Base, or a finished selection of the default
    multiplier (False while the validation study has not selected, and for a grid without an interior optimum)."""
    if method in UNTUNED:
        return True
    try:
        return selected_lr_mult(out, task, method) == DEFAULT_LR_MULT
    except RuntimeError:  # not selected yet, or no interior optimum (NoInteriorOptimum)
        return False


def _at_default(runs: dict[int, dict]) -> bool:
    """Whether these run files were trained at the default multiplier (a file without one predates the grid)."""
    return all(r.get('lr_mult', DEFAULT_LR_MULT) == DEFAULT_LR_MULT for r in runs.values())


def test_methods(out: Path, task: str, setting: str = 'tuned') -> list[str]:
    """The methods with test runs of their own at ``setting``: every method at its selected one (not those whose
    grid has no interior optimum); at the default, the tuned methods whose validation did not select the default
    (those methods' tuned runs are their default runs; a method not selected yet is listed, and its run is refused
    until it is)."""
    if setting == 'tuned':
        return [m for m in METHODS if not without_interior_optimum(out, task, m)]
    return [m for m in METHODS if not _tuned_at_default(out, task, m)]


def test_order(methods: list[str], setting: str = 'tuned', seeds: tuple[int, ...] | None = None) -> list[tuple[int, str]]:
    """(seed, method) in the order a batch runs them: seed by seed, every method at each seed, so that a batch stopped
    anywhere leaves the methods paired on the same seeds (``seeds``: these instead of the pre-registered ones)."""
    planned = {m: tuple(seeds) if seeds else DEFAULT_SEEDS if setting == 'default' else TEST_SEEDS[m] for m in methods}
    return [(seed, m) for seed in sorted({s for v in planned.values() for s in v}) for m in methods
            if seed in planned[m]]


#: The secondary methods of section 4, and the test seeds of theirs a compute cut keeps (the first cut: the rest).
SECONDARY = ('bitfit', 'flora_k7', 'trilora', 'ia3', 'ssl', 'ssb', 'lora_mpc_o', 'lora_mpc_d', 'lora_mpc_n')
SECONDARY_KEPT = 3


def undecided(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> list[str]:
    """'task/method' of every validation grid that has not decided yet (neither a selection nor an edge after the
    last extension)."""
    pending = []
    for task in tasks:
        for method in (m for m in METHODS if m not in UNTUNED):
            try:
                selected_lr_mult(out, task, method)
            except NoInteriorOptimum:
                pass
            except RuntimeError:
                pending.append(f'{task}/{method}')
    return pending


class PlannedRun(NamedTuple):
    """One test-split run of the protocol (the arguments of :func:`run_test_split` and :func:`test_run_path`)."""
    setting: str
    task: str
    seed: int
    method: str
    repeat: int = 0


def batch_order(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> list[PlannedRun]:
    """Every pre-registered test-split run (done or not), in the order of amendment A4, so that a batch stopped
    anywhere leaves a cut of the pre-registered form -- whole seeds, every comparison paired, the secondary methods'
    seeds 3-4 the first to go:

    1. the tuned runs seed by seed, each seed on every task before the next (COCO, DOTA, ADE20K), every method at
       each seed except the secondary methods' seeds beyond the first :data:`SECONDARY_KEPT`; each task's same-seed
       repeat (FLoRA, seed 0) right after seed 0;
    2. the default x1 runs (:data:`DEFAULT_SEEDS`), seed by seed over the tasks;
    3. the secondary methods' remaining tuned seeds.

    Refused while any task's validation grid has not decided (amendment A2: validation first)."""
    if pending := undecided(out, tasks):
        raise RuntimeError(f'the validation grids of {pending} have not selected a setting yet: every task\'s grids '
                           f'finish before the first test-split run (docs/preregistration.md, amendment A2)')
    tuned = {t: test_methods(out, t) for t in tasks}
    default = {t: test_methods(out, t, 'default') for t in tasks}
    seeds = sorted({s for v in TEST_SEEDS.values() for s in v})
    kept = {m: TEST_SEEDS[m][:SECONDARY_KEPT] if m in SECONDARY else TEST_SEEDS[m] for m in METHODS}
    order = []
    for seed in seeds:
        order += [PlannedRun('tuned', t, seed, m) for t in tasks for m in tuned[t] if seed in kept[m]]
        if seed == 0:
            order += [PlannedRun('tuned', t, 0, 'flora', 1) for t in tasks if 'flora' in tuned[t]]
    order += [PlannedRun('default', t, s, m) for s in DEFAULT_SEEDS for t in tasks for m in default[t]]
    order += [PlannedRun('tuned', t, s, m) for s in seeds for t in tasks for m in tuned[t]
              if s in TEST_SEEDS[m] and s not in kept[m]]
    return order


def test_run_path(out: Path, task: str, method: str, seed: int, repeat: int = 0, setting: str = 'tuned') -> Path:
    """Where :func:`run_test_split` writes the run file of (task, method, seed, repeat) at ``setting``."""
    if setting not in SETTINGS:
        raise ValueError(f'unknown test setting {setting!r}; choose from {tuple(SETTINGS)}')
    return out / SETTINGS[setting] / task / method / (f's{seed}' + (f'_r{repeat}' if repeat else '') + '.json')


def run_test_split(task: str, method: str, seed: int, root: Path, out: Path, quick: bool = False,
                   workspace: Path | None = None, repeat: int = 0, setting: str = 'tuned') -> dict:
    """Train (task, method) at its selected learning-rate multiplier with ``seed`` and evaluate it once on the test
    split (per-image predictions kept for the bootstrap); the run file ``out/test/<task>/<method>/s<seed>.json``
    (``repeat`` > 0: a same-seed repeat, ``s<seed>_r<repeat>.json``, which must be identical).
    ``setting='default'``: at :data:`DEFAULT_LR_MULT` instead, into ``out/test_default/`` (refused where validation
    selected the default: those runs exist already, as the tuned ones).
    Refused before the pre-registration, or while the validation study has not selected a setting. ``root``: the
    repository (configs, tools); ``workspace``: where ``data/`` and ``work_dirs/`` are (default: ``root``)."""
    workspace = workspace or root
    from .runs import last_checkpoint, last_validation, test_config
    from .tune import apply_params
    path = test_run_path(out, task, method, seed, repeat, setting)
    name = path.stem
    if path.exists():
        return json.loads(path.read_text())
    prereg = preregistration_commit(root)
    if setting == 'default':
        try:
            selected_lr_mult(out, task, method)  # refuses while validation has not decided
        except NoInteriorOptimum:  # decided: no tuned setting, and x1 is still one to test at
            pass
        if _tuned_at_default(out, task, method):
            raise ValueError(f'{task}/{method}: its tuned runs are at the default lr_mult {DEFAULT_LR_MULT:g} already '
                             f'(they are its default runs); only {test_methods(out, task, "default")} have default runs')
        mult = DEFAULT_LR_MULT
    else:
        mult = selected_lr_mult(out, task, method)
    spec = TASKS[task]
    work_dir = (workspace / 'work_dirs' / 'tuned' / ('quick' if quick else 'full') / task / method
                / f'{SETTINGS[setting]}_{name}')
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config.fromfile(str(root / spec['config']))
    cfg.merge_from_dict({**method_overrides(task, method, root), **(spec['quick'] if quick else {}),
                         'randomness.seed': seed})
    if method not in UNTUNED:
        apply_params(cfg, {LR_MULT: mult})
    config = work_dir / 'config.py'
    cfg.dump(str(config))
    start = time.time()
    subprocess_launcher(cwd=workspace, env=RUN_ENV)(config, work_dir, work_dir / 'train.log')
    val = last_validation(work_dir, spec['metric'])[spec['metric']]
    metrics = test_config(config, last_checkpoint(work_dir), work_dir / 'test', cwd=workspace,
                          log=work_dir / 'test.log', env=RUN_ENV, split='test',
                          predictions=work_dir / 'test_predictions.pkl')
    data = dict(task=task, method=method, seed=seed, repeat=repeat, split='test', setting=setting, lr_mult=mult,
                metric=spec['metric'],
                value=metrics[spec['metric']], metrics={k: metrics[k] for k in (spec['metric'], *spec['extra'])
                                                        if k in metrics},
                validation_value=val, minutes=round((time.time() - start) / 60, 3), **_provenance(root),
                preregistration_commit=prereg, predictions=str(work_dir / 'test_predictions.pkl'), quick=quick,
                overrides={k: repr(v) for k, v in method_overrides(task, method, root).items()},
                resolved_config=_portable(config.read_text(), workspace, root))
    if spec.get('image_stats'):
        data.update(_IMAGE_STATS[spec['image_stats']](cfg, work_dir / 'test_predictions.pkl', metrics[spec['metric']],
                                                       workspace))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_run(data))
    return data


def _load(predictions: Path) -> list:
    import pickle
    with open(predictions, 'rb') as f:
        return pickle.load(f)


def _checked(kind: str, value: float, reported: float, tolerance: float, predictions: Path, stats: dict) -> dict:
    """Keep per-image statistics only if they reproduce the evaluator's number; then drop the bulky dump."""
    if abs(value - reported) > tolerance + 1e-9:
        raise RuntimeError(f'{predictions}: per-image {kind} statistics give {value:.4f}, the evaluator reported '
                           f'{reported}; not keeping inconsistent statistics')
    predictions.unlink()
    return dict(image_stats_kind=kind, image_stats=stats, predictions=None)


def _segmentation_stats(cfg: Config, predictions: Path, reported: float, workspace: Path) -> dict:
    """Per-image intersection / union counts of a segmentation test run (mmseg rounds mIoU to 0.01)."""
    stats = segmentation_stats(_load(predictions), cfg.model.decode_head.num_classes)
    return _checked('segmentation', miou(stats), reported, 0.01, predictions, stats.tolist())


def _coco_stats(cfg: Config, predictions: Path, reported: float, workspace: Path) -> dict:
    """Per-detection matching and per-image ground-truth counts of a COCO test run (mmdet rounds to 0.001)."""
    evaluator = cfg.test_evaluator
    stats = coco_stats(str(workspace / evaluator.ann_file), _load(predictions),
                       cfg.test_dataloader.dataset.metainfo.classes)
    return _checked('coco', bbox_map(stats), reported, 0.0005, predictions,
                    {k: v.tolist() for k, v in stats.items()})


def _dota_stats(cfg: Config, predictions: Path, reported: float, workspace: Path) -> dict:
    """Per-detection matching and per-image ground-truth counts of a DOTA test run (mmrotate rounds to 0.001)."""
    stats = dota_stats(_load(predictions), len(cfg.test_dataloader.dataset.metainfo.classes))
    return _checked('dota', rbox_map(stats), reported, 0.0005, predictions, {k: v.tolist() for k, v in stats.items()})


#: per-image statistics by the kind a task names (TASKS[task]['image_stats'])
_IMAGE_STATS = {'segmentation': _segmentation_stats, 'coco': _coco_stats, 'dota': _dota_stats}


def curves_table(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    """Markdown: each method's validation curve (metric in % per learning-rate multiplier; 'x' a failed run) and
    its selection ('pending' until interior), from the run files; methods without a run are listed after."""
    lines = []
    for task in tasks:
        runs = {m: validation_records(out, task, m) for m in METHODS if m not in UNTUNED}
        mults = sorted({r['lr_mult'] for rs in runs.values() for r in rs})
        if not mults:
            continue
        scale = TASKS[task]['to_percent']
        lines += [f'\n**{task}** ({TASKS[task]["metric"]}, %, validation split, seed {VALIDATION_SEED})\n',
                  '| method | ' + ' | '.join(f'x{m:g}' for m in mults) + ' | selected |',
                  '|---|' + '---:|' * (len(mults) + 1)]
        waiting = [m for m, rs in runs.items() if not rs]
        for method, rs in runs.items():
            if not rs:
                continue
            by = {r['lr_mult']: r for r in rs}
            cells = ['-' if m not in by else ('x' if _value(by[m]) == -math.inf else f'{scale * by[m]["value"]:.1f}')
                     for m in mults]
            lines.append(f'| {method} | ' + ' | '.join(cells) + f' | {_choice(out, task, method)} |')
        if waiting:
            lines.append(f'\nNot run yet: {", ".join(waiting)}.')
    started = [t for t in tasks if any(validation_records(out, t, m) for m in METHODS if m not in UNTUNED)]
    if len(started) > 1:  # the selections side by side: how far one multiplier per method carries across tasks
        lines += ['\n**Selected multipliers across tasks**\n', '| method | ' + ' | '.join(started) + ' |',
                  '|---|' + '---:|' * len(started)]
        lines += [f'| {m} | ' + ' | '.join(_choice(out, t, m) for t in started) + ' |'
                  for m in METHODS if m not in UNTUNED]
    return '\n'.join(lines).strip()


#: The panels of the curves plot: the low-rank forms; full fine-tuning and the per-channel methods.
CURVE_PANELS = {'low-rank forms': ('lora', 'dora', 'flora', 'flora_k7', 'trilora', 'lora_mpc_o', 'lora_mpc_d',
                                   'lora_mpc_n'),
                'full fine-tuning and per-channel methods': ('full', 'bitfit', 'ia3', 'ssl', 'ssb')}


def curves_figure(out: Path, task: str, zoom: float = 12.0):
    """A matplotlib figure of one task's validation curves (metric in % against the learning-rate multiplier, log
    axis; the selected point ringed; a failed run an 'x' on the bottom axis), a column per :data:`CURVE_PANELS`
    entry: the full range on top, below it the ``zoom`` points under the column's best (where the selections are
    made); None without runs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not any(validation_records(out, task, m) for m in METHODS if m not in UNTUNED):
        return None
    scale = TASKS[task]['to_percent']
    fig, axes = plt.subplots(2, len(CURVE_PANELS), figsize=(6 * len(CURVE_PANELS), 7), sharex='col')
    for column, (title, methods) in enumerate(CURVE_PANELS.items()):
        top = -math.inf
        for ax in axes[:, column]:
            for method in methods:
                runs = validation_records(out, task, method)
                if not runs:
                    continue
                done = [r for r in runs if _value(r) > -math.inf]
                line, = ax.plot([r['lr_mult'] for r in done], [scale * r['value'] for r in done], marker='o', ms=3,
                                label=method)
                top = max([top, *(scale * r['value'] for r in done)])
                failed = [r['lr_mult'] for r in runs if _value(r) == -math.inf]
                if failed:
                    ax.plot(failed, [0] * len(failed), 'x', color=line.get_color())
                choice = _choice(out, task, method)
                if choice.startswith('x'):
                    best = next(r for r in done if f'x{r["lr_mult"]:g}' == choice)
                    ax.plot([best['lr_mult']], [scale * best['value']], 'o', ms=10, mfc='none',
                            color=line.get_color())
            ax.set_xscale('log', base=2)
            ax.grid(alpha=0.3)
        axes[0, column].set_title(title)
        axes[0, column].legend(fontsize=7)
        axes[1, column].set_xlabel('learning-rate multiplier (x AdamW 2e-4)')
        if math.isfinite(top):
            axes[1, column].set_ylim(top - zoom, top + 1)
    axes[0, 0].set_ylabel(f'{TASKS[task]["metric"]} (%)')
    axes[1, 0].set_ylabel(f'the best {zoom:g} points (%)')
    fig.suptitle(f'{task}: validation curves (seed {VALIDATION_SEED}; ringed: selected)')
    fig.tight_layout()
    return fig


def plot_curves(out: Path, tasks: tuple[str, ...], folder: Path) -> list[Path]:
    """:func:`curves_figure` of each task with runs, as ``folder/<task>_curves.png``."""
    import matplotlib.pyplot as plt
    written = []
    for task in tasks:
        fig = curves_figure(out, task)
        if fig is not None:
            folder.mkdir(parents=True, exist_ok=True)
            written.append(folder / f'{task}_curves.png')
            fig.savefig(written[-1], dpi=100)
            plt.close(fig)
    return written


def _choice(out: Path, task: str, method: str) -> str:
    """The selection of (task, method) as the curves show it."""
    if not validation_records(out, task, method):
        return '-'
    try:
        return f'x{selected_lr_mult(out, task, method):g}'
    except NoInteriorOptimum:
        return 'at an edge: not tested'
    except RuntimeError:
        return 'pending'


def progress(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> list[dict]:
    """What the protocol has run and what it still needs, per task and phase (validation, tuned test, same-seed
    repeat, default-setting test), from the run files: done, still to run, and the median minutes of a finished run
    of that task (test runs: the validation runs' until a test run exists; the median, as a run slowed by another
    process on the machine must not inflate the estimate). ``at_least``: more runs may follow (a grid
    extension; a default run for a method whose selection is still open is counted as needed)."""
    rows = []
    for task in tasks:
        tuned = [m for m in METHODS if m not in UNTUNED]
        edge = {m for m in tuned if without_interior_optimum(out, task, m)}
        pending = {m: () if m in edge else extension(out, task, m) for m in tuned}
        val = [r for m in tuned for r in validation_records(out, task, m)]
        tests = {s: {m: _own_runs(out, task, m, s) for m in METHODS} for s in SETTINGS}
        done_tests = [r for by in tests.values() for runs in by.values() for r in runs.values()]
        minutes = {'validation': _median_minutes(val)}
        minutes['test'] = _median_minutes(done_tests) or minutes['validation']
        repeats = _repeat_runs(out, task, 'flora')  # one is pre-registered; more may show it again
        default_needed = [m for m in tuned if not _tuned_at_default(out, task, m)]
        phases = [  # phase, done, to run, kind of run, whether more may follow
            ('validation', len(val), sum(len(v) for v in pending.values()), 'validation', True),
            ('test (tuned)', sum(map(len, tests['tuned'].values())),
             sum(len(set(TEST_SEEDS[m]) - set(tests['tuned'][m])) for m in METHODS if m not in edge), 'test', False),
            ('same-seed repeat', len(repeats), 1 - min(len(repeats), 1), 'test', False),
            ('test (default x1)', sum(map(len, tests['default'].values())),
             sum(len(set(DEFAULT_SEEDS) - set(tests['default'][m])) for m in default_needed), 'test',
             any(pending[m] for m in default_needed)),
        ]
        rows += [dict(task=task, phase=phase, done=done, to_run=todo, minutes=minutes[kind], at_least=more)
                 for phase, done, todo, kind, more in phases]
    return rows


def _median_minutes(runs: list[dict]) -> float | None:
    minutes = [r['minutes'] for r in runs if r.get('minutes')]
    return statistics.median(minutes) if minutes else None


def progress_table(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    """Markdown of :func:`progress` with the hours still needed at one training process."""
    from ..docblocks import markdown_table
    rows, hours, unknown = [], 0.0, False
    for r in progress(out, tasks):
        need = r['to_run'] * r['minutes'] / 60 if r['minutes'] else None
        hours += need or 0
        unknown = unknown or (need is None and r['to_run'] > 0)
        rows.append([r['task'], r['phase'], str(r['done']), f'{r["to_run"]}{"+" if r["at_least"] else ""}',
                     f'{r["minutes"]:.1f}' if r['minutes'] else '-', f'{need:.1f}' if need is not None else '-'])
    return '\n'.join([*markdown_table(['task', 'phase', 'done', 'to run', 'minutes per run', 'hours'], rows, right=2),
                      '', f'Still to run: {hours:.1f} hours at one training process'
                      + (' and more (a task without a finished run has no time per run yet)' if unknown else '')
                      + ('; "+": at least (grid extensions and open selections may add runs).')])


# -- the analysis (docs/preregistration.md, section 5) ------------------------------------------------------------
#: The primary comparisons (method a - method b) of every task: Holm's family is all of them over the tasks.
PRIMARY = (('flora', 'lora'), ('flora', 'dora'), ('dora', 'lora'), ('flora', 'trilora'), ('trilora', 'lora'),
           ('lora_mpc_o', 'lora'), ('lora_mpc_d', 'lora'), ('lora_mpc_n', 'lora'), ('ssb', 'ssl'), ('ssb', 'ia3'),
           ('ssl', 'ia3'), ('flora_k7', 'flora'))
#: The papers' claims: name -> the comparisons that must hold, each ('>' | '~', a, b).
CLAIMS = {
    'FLoRA paper: FLoRA > LoRA and DoRA at a matched budget': (('>', 'flora', 'lora'), ('>', 'flora', 'dora')),
    'Subspace paper: P(AGB) > P(ADB) > P(AB) (FLoRA > diagonal core > LoRA)': (('>', 'flora', 'trilora'),
                                                                              ('>', 'trilora', 'lora')),
    'Subspace paper: MPC_o improves LoRA': (('>', 'lora_mpc_o', 'lora'), ),
    'Subspace paper: MPC_d improves LoRA': (('>', 'lora_mpc_d', 'lora'), ),
    'Subspace paper: MPC_n improves LoRA': (('>', 'lora_mpc_n', 'lora'), ),
    'Subspace paper: SSB > SSL ~ (IA)3': (('>', 'ssb', 'ssl'), ('~', 'ssl', 'ia3')),
    'This project (untuned study): FLoRA with kernel_rank 7 > kernel_rank 2 at a matched budget':
        (('>', 'flora_k7', 'flora'), ),
}
EQUIVALENCE = 0.5  # points: an interval inside +-0.5 is "practically equal"
INTERIM_NOTE = ('"(interim)": read before all of its pre-registered paired seeds are in (the test phase is running; '
                'Holm\'s family is the comparisons present so far); the pre-registered verdict is the one read when '
                'none is interim.')
#: Item 5 of the analysis, descriptive (per-comparison intervals, outside Holm's family): every tuned method - Base,
#: and Full - every other tuned method -- where each method sits between the frozen backbone and full fine-tuning.
BRACKET = (*((m, 'base') for m in METHODS if m not in UNTUNED),
           *(('full', m) for m in METHODS if m not in (*UNTUNED, 'full')))


def heldout_runs(out: Path, task: str, method: str, repeat: int = 0, setting: str = 'tuned') -> dict[int, dict]:
    """The test-split run files of (task, method) at ``setting``, by seed (``repeat`` > 0: that same-seed repeat).
    At the default, a method whose tuned runs are at the default multiplier answers with those."""
    runs = _own_runs(out, task, method, setting, repeat)
    if setting == 'default' and not _own_runs(out, task, method, setting, None):
        tuned = heldout_runs(out, task, method, repeat)
        return tuned if _at_default(tuned) else {}
    return runs


def _folder_runs(out: Path, task: str, method: str, setting: str) -> list[dict]:
    """Every run file in ``setting``'s own folder for (task, method), first runs and repeats, in file-name order."""
    folder = out / SETTINGS[setting] / task / method
    return [json.loads(p.read_text()) for p in sorted(folder.glob('s*.json'))] if folder.exists() else []


def _own_runs(out: Path, task: str, method: str, setting: str, repeat: int | None = 0) -> dict[int, dict]:
    """The run files in ``setting``'s own folder, by seed (``repeat``: that one; None: any), without the tuned runs
    that stand in for a method's default ones."""
    return {r['seed']: r for r in _folder_runs(out, task, method, setting)
            if repeat is None or r.get('repeat', 0) == repeat}


def runs_fingerprint(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    """'N test-split run files, sha256 <12 hex>' of every run file (path and content) of ``tasks`` at every setting:
    a generated page states it, and its test compares it with the committed files without redoing the bootstrap."""
    files = sorted(p for setting in SETTINGS.values() for t in tasks for p in (out / setting / t).glob('*/s*.json'))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(out).as_posix().encode() + b'\0' + path.read_bytes() + b'\0')
    return f'{len(files)} test-split run files, sha256 {digest.hexdigest()[:12]}'


def _repeat_runs(out: Path, task: str, method: str) -> list[dict]:
    """Every same-seed repeat among (task, method)'s tuned test runs (``s<seed>_r<repeat>.json``), by seed and repeat."""
    return sorted((r for r in _folder_runs(out, task, method, 'tuned') if r.get('repeat', 0)),
                  key=lambda r: (r['seed'], r['repeat']))


def _same_environment(one: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """'same' / 'differs' where both run files record their environment (:func:`~flora_mm.engine.runs.environment`),
    else 'not recorded' (run files written before it was recorded)."""
    if 'environment' not in one or 'environment' not in other:
        return 'not recorded'
    return 'same' if one['environment'] == other['environment'] else 'differs'


def repeats_table(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> list[list[str]]:
    """Rows (task, method, seed, repeat, first run, repeated run, difference, per-image statistics, environment) of
    every same-seed repeat, each against its seed's first run: determinism, shown. 'per-image statistics' says
    whether the repeat's metrics and per-image statistics are both identical to the first run's (a metric can agree
    while its images differ); 'environment' whether the two runs recorded the same CPU kernels and package versions
    (bit-identical repeats are expected only within one)."""
    rows = []
    for task in tasks:
        for method in METHODS:
            first = heldout_runs(out, task, method)
            for run in (r for r in _repeat_runs(out, task, method) if r['seed'] in first):
                one = first[run['seed']]
                same = one.get('metrics') == run.get('metrics') and one['image_stats'] == run['image_stats']
                rows.append([task, method, str(run['seed']), str(run['repeat']), f'{one["value"]:.4f}',
                             f'{run["value"]:.4f}', f'{run["value"] - one["value"]:+.4f}',
                             'identical' if same else 'differ', _same_environment(one, run)])
    return rows


#: A test run's kind of per-image statistics -> (the metric of a multiset of test images, its factor to points).
_METRICS = {'segmentation': (miou, 1.0), 'coco': (bbox_map, 100.0), 'dota': (rbox_map, 100.0)}
_RESAMPLED: dict[tuple[str, int], tuple[float, np.ndarray, int]] = {}
#: Where each test run's resampled metric is also kept between processes (None: in this process only). Files are
#: named by the run's statistics, the number of resamples and the source of the metrics
#: (:mod:`flora_mm.engine.analysis`), so a changed run or metric never reads a stale file. ``tools/tuned_study.py``
#: sets ``results/tuned/.cache/resampled`` (ignored by git): a report computes only the runs added since the last.
RESAMPLED_CACHE: Path | None = None


@functools.lru_cache(maxsize=1)
def _metrics_source() -> str:
    import inspect
    from . import analysis
    return hashlib.sha1(inspect.getsource(analysis).encode()).hexdigest()[:16]


def _per_image(run: dict):
    """A test run's per-image statistics, the metric of its kind and that metric's factor to points."""
    kind = run['image_stats_kind']
    metric, points = _METRICS[kind]
    raw = run['image_stats']
    return (np.asarray(raw) if kind == 'segmentation' else {k: np.asarray(v) for k, v in raw.items()}), metric, points


def _resampled(run: dict, resamples: int) -> tuple[float, np.ndarray, int]:
    """A test run's metric in points, its metric on each of the shared test-image resamples
    (``image_draws(images, resamples)``, the same for every run) and its number of test images: computed once per
    run content and kept (in memory, and in :data:`RESAMPLED_CACHE` where set), since a run enters many comparisons
    (the primary ones, the default setting's, the tuning gain, Base and Full)."""
    stats, metric, points = _per_image(run)
    arrays = [stats] if run['image_stats_kind'] == 'segmentation' else [stats[k] for k in sorted(stats)]
    digest = hashlib.sha1(run['image_stats_kind'].encode())
    for array in arrays:
        digest.update(repr(array.shape).encode() + np.ascontiguousarray(array, dtype=float).tobytes())
    key = (digest.hexdigest(), resamples)
    if key in _RESAMPLED:
        return _RESAMPLED[key]
    path = None if RESAMPLED_CACHE is None else RESAMPLED_CACHE / f'{key[0]}_{resamples}_{_metrics_source()}.npz'
    if path is not None and path.exists():
        with np.load(path) as kept:
            _RESAMPLED[key] = (float(kept['value']), kept['values'], int(kept['images']))
        return _RESAMPLED[key]
    images = n_images(stats)
    values = points * metric_on_draws(metric, stats, image_draws(images, resamples))
    _RESAMPLED[key] = (points * metric(stats, None), values, images)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix('.partial.npz')  # written whole, then renamed: a killed report leaves no half file
        np.savez(partial, value=_RESAMPLED[key][0], values=values, images=images)
        partial.replace(path)
    return _RESAMPLED[key]


def compare(out: Path, task: str, a: str, b: str, resamples: int = 10000, setting: str = 'tuned') -> dict | None:
    """Paired difference a - b on the test split at ``setting``: the bootstrap over seeds and test images, and the
    seed-only t interval; None while fewer than 2 paired seeds exist."""
    result = _paired(task, heldout_runs(out, task, a, setting=setting), heldout_runs(out, task, b, setting=setting),
                     resamples)
    if result is not None:
        result.update(a=a, b=b, task=task)
    return result


def tuning_gain(out: Path, task: str, method: str, resamples: int = 10000) -> dict | None:
    """Paired difference tuned - default of one method on the test split (same seeds; None without 2 of them, or
    where the tuned setting is the default)."""
    tuned = heldout_runs(out, task, method)
    if not tuned or _at_default(tuned):
        return None
    result = _paired(task, tuned, heldout_runs(out, task, method, setting='default'), resamples)
    if result is not None:
        result.update(method=method, task=task)
    return result


def _paired(task: str, ra: dict[int, dict], rb: dict[int, dict], resamples: int) -> dict | None:
    """The paired bootstrap (seeds and test images) and seed-only t interval of runs ``ra`` - ``rb``."""
    seeds = sorted(set(ra) & set(rb))
    if len(seeds) < 2:
        return None
    va, vb = ({s: _resampled(runs[s], resamples) for s in seeds} for runs in (ra, rb))
    images = {v[2] for v in (*va.values(), *vb.values())}
    if len(images) != 1:
        raise ValueError(f'{task}: test runs evaluated on different numbers of test images: {sorted(images)}')
    result = paired_resampled({s: v[:2] for s, v in va.items()}, {s: v[:2] for s, v in vb.items()},
                              images=images.pop())
    t_lo, t_hi, _ = t_interval([va[s][0] - vb[s][0] for s in seeds])
    result.update(t_lo=float(t_lo), t_hi=float(t_hi), paired_seeds=seeds)
    return result


def verdict(result: dict | None, relation: str = '>') -> str:
    """The pre-registered verdict of one comparison (needs ``holm_p``)."""
    if result is None:
        return 'unresolved (no data)'
    inside = -EQUIVALENCE <= result['lo'] and result['hi'] <= EQUIVALENCE
    if relation == '~':
        return 'supported' if inside else ('not supported' if result['lo'] > EQUIVALENCE or result['hi'] < -EQUIVALENCE
                                           else 'unresolved')
    if result['lo'] > 0 and result['holm_p'] < 0.05:
        return 'supported'
    if result['hi'] < 0 or inside:
        return 'not supported'
    return 'unresolved'


def _interim(tested: list[str], a: str, b: str, result: dict | None) -> bool:
    """Whether the tuned a - b is read before its pre-registered paired seeds are all in: fewer of them, or none yet
    while both methods are to be tested (``tested``: the task's :func:`test_methods`; not listed: a method whose grid
    has no interior optimum)."""
    if result is None:
        return a in tested and b in tested
    return not set(TEST_SEEDS[a]) & set(TEST_SEEDS[b]) <= set(result['paired_seeds'])


def analyse(out: Path, tasks: tuple[str, ...] = tuple(TASKS), resamples: int = 10000) -> dict:
    """Every primary comparison on every task with Holm's correction over the family, each claim's verdict per task
    and overall (supported on at least two tasks and contradicted on none), the same comparisons at the default
    setting, each method's tuned - default gain and its :data:`BRACKET` comparisons (the last three descriptive).
    While the test phase runs, a comparison without all its pre-registered seeds is ``interim``, and so is every
    claim that reads one (and Holm's family is then the comparisons present): the verdicts are the protocol's only
    once nothing is interim."""
    results = {(t, a, b): compare(out, t, a, b, resamples) for t in tasks for a, b in PRIMARY}
    tested = {t: test_methods(out, t) for t in tasks}  # once per task: it reads every validation grid
    interim = {(t, a, b): _interim(tested[t], a, b, r) for (t, a, b), r in results.items()}
    present = [k for k, r in results.items() if r is not None]
    for key, p in zip(present, holm([results[k]['p'] for k in present])):
        results[key].update(holm_p=p, interim=interim[key])
    claims = {}
    for name, parts in CLAIMS.items():
        per_task, early = {}, {}
        for t in tasks:
            marks = [verdict(results[(t, a, b)], rel) for rel, a, b in parts]
            per_task[t] = ('supported' if all(m == 'supported' for m in marks) else
                           'not supported' if any(m == 'not supported' for m in marks) else 'unresolved')
            early[t] = any(interim[(t, a, b)] for _, a, b in parts)
        supported = sum(v == 'supported' for v in per_task.values())
        against = sum(v == 'not supported' for v in per_task.values())
        claims[name] = dict(per_task=per_task, interim=early, overall_interim=any(early.values()),
                            overall='supported' if supported >= 2 and not against else
                            'not supported' if against else 'unresolved')
    default = [r for r in (compare(out, t, a, b, resamples, setting='default') for t in tasks for a, b in PRIMARY)
               if r is not None]
    gains = [r for r in (tuning_gain(out, t, m, resamples) for t in tasks for m in METHODS) if r is not None]
    bracket = [r for r in (compare(out, t, a, b, resamples) for t in tasks for a, b in BRACKET) if r is not None]
    return dict(comparisons=[r for r in results.values() if r is not None], claims=claims, default=default,
                gains=gains, bracket=bracket)


def _direction(result: dict | None) -> str:
    """Which way a per-comparison 95% interval resolves a - b (no multiplicity correction)."""
    if result is None:
        return 'no data'
    return 'a > b' if result['lo'] > 0 else 'a < b' if result['hi'] < 0 else 'unresolved'


def _marked(label: str, interim: bool) -> str:
    return f'{label} (interim)' if interim else label


def _claim_rows(claims: dict, tasks: tuple[str, ...]) -> list[list[str]]:
    return [[name, *(_marked(c['per_task'][t], c['interim'][t]) for t in tasks), _marked(c['overall'],
                                                                                      c['overall_interim'])]
            for name, c in claims.items()]


def _interval(r: dict) -> str:
    return f'{r["mean"]:+.2f} [{r["lo"]:+.2f}, {r["hi"]:+.2f}]'


def _summary(task: str, runs: dict[int, dict]) -> str:
    values = np.asarray([points * metric(stats) for stats, metric, points in map(_per_image, runs.values())])
    return f'{values.mean():.2f}' + (f' +- {values.std(ddof=1):.2f}' if len(values) > 1 else '') + f' ({len(values)})'


def _bracket_rows(bracket: list[dict], task: str) -> list[list[str]]:
    """Rows (method, method - base, full - method, share of full - base) of one task's :data:`BRACKET` results."""
    found = {(r['a'], r['b']): r for r in bracket if r['task'] == task}
    span = found.get(('full', 'base'))
    rows = []
    for method in (m for m in METHODS if m not in UNTUNED):
        above, below = found.get((method, 'base')), found.get(('full', method))
        if above is None and below is None:
            continue
        same_seeds = above is not None and span is not None and above['paired_seeds'] == span['paired_seeds']
        share = f'{100 * above["mean"] / span["mean"]:.0f}%' if same_seeds and span['mean'] > 0 else '-'
        rows.append([method, _interval(above) if above else '-', _interval(below) if below else '-', share])
    return rows


def report(out: Path, tasks: tuple[str, ...] = tuple(TASKS), resamples: int = 10000) -> str:
    """Markdown of the tuned comparison from its run files: per task the methods (selected multiplier, test mean
    +- sd over seeds), every primary comparison (bootstrap interval over seeds and test images, seed-only t
    interval, Holm-adjusted p, verdict), where each method sits between Base and Full (:data:`BRACKET`), and each
    claim's verdict per task and overall."""
    from ..docblocks import markdown_table
    result = analyse(out, tasks, resamples)
    lines = []
    for task in tasks:
        rows = []
        gains = {r['method']: r for r in result['gains'] if r['task'] == task}
        for method in METHODS:
            runs = heldout_runs(out, task, method)
            if runs:
                default = heldout_runs(out, task, method, setting='default')
                rows.append([method, f'x{next(iter(runs.values())).get("lr_mult", 1):g}', _summary(task, runs),
                             _summary(task, default) if default else '-',
                             _interval(gains[method]) if method in gains else '-'])
        if not rows:
            continue
        lines += [f'\n### {task} ({TASKS[task]["metric"]}, %, test split)\n',
                  *markdown_table(['method', 'selected lr multiplier', 'tuned: mean +- sd (seeds)',
                                   f'default x{DEFAULT_LR_MULT:g}: mean +- sd (seeds)',
                                   'tuned - default, 95% bootstrap (seeds and test images)'], rows)]
        pairs = [[f'{r["a"]} - {r["b"]}', f'{r["mean"]:+.2f}', f'[{r["lo"]:+.2f}, {r["hi"]:+.2f}]',
                  f'[{r["t_lo"]:+.2f}, {r["t_hi"]:+.2f}]', f'{r["holm_p"]:.3f}', _marked(verdict(r), r['interim'])]
                 for r in result['comparisons'] if r['task'] == task]
        if pairs:
            lines += ['', *markdown_table(['a - b', 'mean', '95% bootstrap (seeds and test images)', '95% t (seeds)',
                                           'Holm p', 'verdict for a > b'], pairs)]
        tuned = {(r['a'], r['b']): r for r in result['comparisons'] if r['task'] == task}
        default = [[f'{r["a"]} - {r["b"]}', _interval(r), _direction(r), _direction(tuned.get((r['a'], r['b'])))]
                   for r in result['default'] if r['task'] == task]
        if default:
            lines += ['', f'At the default setting (x{DEFAULT_LR_MULT:g} for every method; descriptive: per-comparison '
                          f'intervals over seeds and test images, no Holm correction), next to the tuned direction:', '',
                      *markdown_table(['a - b', f'default x{DEFAULT_LR_MULT:g}: mean [95% bootstrap]', 'default',
                                       'tuned'], default)]
        bracket = _bracket_rows(result['bracket'], task)
        if bracket:
            lines += ['', 'Between the frozen backbone and full fine-tuning (descriptive: per-comparison intervals over '
                          'seeds and test images, no Holm correction; the share of Full - Base is the ratio of the two '
                          'paired means on the seeds both comparisons share):', '',
                      *markdown_table(['method', 'method - base, 95% bootstrap', 'full - method, 95% bootstrap',
                                       'share of full - base'], bracket)]
    if not lines:
        return 'No test-split run yet: the validation grids select the settings first (docs/preregistration.md).'
    repeats = repeats_table(out, tasks)
    if repeats:
        lines += ['\n### Same-seed repeats\n', *markdown_table(['task', 'method', 'seed', 'repeat', 'run', 'repeated run',
                                                                  'difference', 'metrics and per-image statistics',
                                                                  'environment'], repeats, right=2)]
    lines += ['\n### Claims\n', *markdown_table(['claim', *tasks, 'overall'], _claim_rows(result['claims'], tasks),
                                                right=len(tasks) + 2)]
    if any(r['interim'] for r in result['comparisons']) or any(c['overall_interim'] for c in result['claims'].values()):
        lines += ['', INTERIM_NOTE]
    lines += ['', f'From {runs_fingerprint(out, tasks)}.']
    return '\n'.join(lines).strip()


#: The methods a user chooses between, ranked in :func:`ranking` (Base and Full are its ends, listed for reference).
ADAPTERS = tuple(m for m in METHODS if m not in (*UNTUNED, 'full'))


def ranking(out: Path, task: str, resamples: int = 10000) -> list[dict]:
    """Every method with tuned test runs on ``task``, by test mean (best first): selected multiplier, per-seed mean
    and sd, and for each adapter below the top adapter, top - it (:func:`compare`: paired seeds, seeds and test images
    resampled), ``tied``: True when that interval includes 0 (and for the top adapter), None where it cannot be
    computed yet (fewer than 2 paired seeds) and for Base and Full, False otherwise. Descriptive: the top adapter is picked on these same runs
    (so its lead is, if anything, flattered) and no multiplicity correction is applied."""
    rows = []
    for method in METHODS:
        runs = heldout_runs(out, task, method)
        if runs:
            values = np.asarray([_resampled(runs[s], resamples)[0] for s in sorted(runs)])
            rows.append(dict(method=method, lr_mult=next(iter(runs.values())).get('lr_mult', DEFAULT_LR_MULT),
                             mean=float(values.mean()), sd=float(values.std(ddof=1)) if len(values) > 1 else None,
                             seeds=len(values), adapter=method in ADAPTERS))
    rows.sort(key=lambda r: -r['mean'])
    top = next((r['method'] for r in rows if r['adapter']), None)
    for row in rows:
        row['top'] = top
        lead = compare(out, task, top, row['method'], resamples) if row['adapter'] and row['method'] != top else None
        row['lead'] = lead
        row['tied'] = True if row['method'] == top else None if lead is None else bool(lead['lo'] <= 0)
    return rows


def shortlist(ties: Mapping[str, Mapping[str, bool | None]],
              params: Mapping[str, Mapping[str, int]]) -> list[str] | None:
    """The README's recommendation rule (amendment A5): the adapters tied with the top adapter on every task.

    Args:
        ties: Per task, each adapter's :func:`ranking` ``tied`` (True / False / None: not known yet).
        params: Per task, each adapter's trainable backbone parameters.

    Returns:
        The adapters tied on every task in ``ties``, fewest trainable backbone parameters first (the most over the
        tasks), or None while any adapter's tie is not known.
    """
    if any(tie is None for task in ties.values() for tie in task.values()):
        return None
    common = set.intersection(*({m for m, tie in task.items() if tie} for task in ties.values())) if ties else set()
    return sorted(common, key=lambda m: (max(params[t][m] for t in ties), m))


def shortlist_sentence(ties: Mapping[str, Mapping[str, bool | None]], params: Mapping[str, Mapping[str, int]]) -> str:
    """:func:`shortlist` as the README states it: with no common adapter, each task's tied adapters instead; while
    some tie is not known, that it is not formed yet."""
    names = shortlist(ties, params)
    if names is None:
        unknown = sum(tie is None for task in ties.values() for tie in task.values())
        return (f'**Shortlist** (amendment A5): not formed yet -- {unknown} adapter row(s) above have fewer than 2 '
                'seeds paired with the top adapter ("-"), so whether they tie is not known.')
    tasks = ', '.join(ties)
    if names:
        listed = ', '.join(f'{m} ({max(params[t][m] for t in ties):,})' for m in names)
        return (f'**Shortlist** (amendment A5): the adapters tied with the top adapter on every task here ({tasks}), '
                f'fewest trainable backbone parameters first: {listed}.')
    per_task = '; '.join(f'{t}: ' + ', '.join(shortlist({t: ties[t]}, params)) for t in ties)
    return (f'**Shortlist** (amendment A5): no adapter is tied with the top adapter on every task here ({tasks}); '
            f'tied per task, fewest trainable backbone parameters first -- {per_task}.')


def headline(out: Path, root: Path, tasks: tuple[str, ...] = tuple(TASKS), resamples: int = 10000) -> str:
    """The README's "Which method?" block: per task :func:`ranking` with each method's trainable backbone parameters,
    the :func:`shortlist`, and each claim's verdict (:func:`analyse`)."""
    from ..docblocks import markdown_table
    from mmengine.registry import init_default_scope
    from ..models.budget import trainable_parameters
    lines, ties, params_of = [], {}, {}
    for task in tasks:
        rows = ranking(out, task, resamples)
        if not rows:
            continue
        ties[task] = {r['method']: r['tied'] for r in rows if r['adapter']}
        images = _resampled(next(iter(heldout_runs(out, task, rows[0]['method']).values())), resamples)[2]
        init_default_scope(Config.fromfile(str(root / TASKS[task]['config'])).get('default_scope'))
        table, params_of[task] = [], {}
        for r in rows:
            params = params_of[task][r['method']] = trainable_parameters(
                method_config(task, r['method'], root).model.backbone)[0]
            lead = ('(top adapter)' if r['method'] == r['top'] else '(reference)' if not r['adapter'] else
                    _interval(r['lead']) + (' tied' if r['tied'] else '') if r['lead'] else '-')
            sd = f' +- {r["sd"]:.2f}' if r['sd'] is not None else ''
            mult = '-' if r['method'] in UNTUNED else f'x{r["lr_mult"]:g}'
            table.append([r['method'], f'{params:,}', mult, f'{r["mean"]:.2f}{sd} ({r["seeds"]})', lead])
        lines += [f'\n**{task}** ({TASKS[task]["metric"]}, %, test split: {images} images)\n',
                  *markdown_table(['method', 'trainable backbone params', 'selected lr multiplier',
                                   'test: mean +- sd (seeds)', 'top adapter - method, 95% bootstrap'], table)]
    if not lines:
        return 'No test-split run yet: the validation grids select the settings first (docs/preregistration.md).'
    lines += ['', shortlist_sentence(ties, params_of)]
    claims = analyse(out, tasks, resamples)['claims']
    lines += ['', '"top adapter - method": paired over the seeds both have, resampling seeds and test images; "tied": '
                  'the interval includes 0. Descriptive -- the top adapter is picked on these same runs and no '
                  'multiplicity correction applies, and a method with fewer seeds (5 against the top\'s 10, say) ties more '
                  'easily; the pre-registered tests are the claims below.', '',
              *markdown_table(['claim (pre-registered verdict)', *tasks, 'overall'], _claim_rows(claims, tasks),
                              right=len(tasks) + 2)]
    if any(c['overall_interim'] for c in claims.values()):
        lines += ['', INTERIM_NOTE]
    lines += ['', f'From {runs_fingerprint(out, tasks)}.']
    return '\n'.join(lines).strip()

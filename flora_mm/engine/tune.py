"""Hyperparameter search over any mm config, on Optuna (``tools/tune.py`` is its command line).

A study trains the config once per trial (per seed), each time as its own process of ``tools/train.py``'s command
line (:mod:`flora_mm.cli.train`; under torchrun for a multi-process trial), with the trial's settings applied as
config paths, and maximises (or minimises) the config's own validation metric. What Optuna already does is left to
it: the samplers (TPE by default, :class:`optuna.samplers.GridSampler` for a grid), the pruners, the storage (a
SQLite file in the work dir by default, or any storage URL, which several processes or machines can share), the
heartbeat that fails a trial whose process died and re-queues its parameters, the plots.

Search space: ``PATH=KIND:...`` with KIND ``log:LOW:HIGH`` / ``float:LOW:HIGH`` / ``int:LOW:HIGH`` /
``choice:A,B,...``; a grid is ``PATH=V1,V2,...``. PATH is a dotted config path that must exist in the config
(``model.backbone.adapter.scale``, ``optim_wrapper.optimizer.weight_decay``...), or :data:`LR_MULT`: a
multiplier on the learning rate of the backbone's trainable parameters (the adapter, or the unfrozen weights),
heads and neck unchanged (``paramwise_cfg.custom_keys['backbone'].lr_mult``, multiplying any more specific
``backbone...`` key the config has).

An optimum at the edge of a grid is not an optimum: :func:`edge_extension` names the point one step beyond the edge
the best value sits on, and :func:`run_extended_grid` (``tools/tune.py --grid ... --extend N``) runs such points,
each as a study of its own in ``WORK_DIR/extend_<value>/``, until the best value is interior (or N are used up).

One work dir holds one study (``study.json`` names it; a second study there is refused). Every trial writes
``WORK_DIR/trial_NNNN/`` (the config it trained, per-seed work dirs, ``trial.json`` with
parameters, metric, minutes and commit); the study ends with ``best_config.py`` (a ready-to-run config of the
best trial), ``trials.json``, a summary table and PNG plots.
"""
from __future__ import annotations

import ast
import ctypes
import dataclasses
import json
import math
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from ..cli import TRAIN, command, torchrun_command
from .runs import git, last_validation, run_logged

__all__ = ['LR_MULT', 'METRICS', 'SearchParam', 'StudySettings', 'Study', 'TrialFailed', 'apply_params',
           'check_paths', 'check_validation_split', 'count_validations', 'default_metric', 'edge_extension',
           'grid_results', 'make_pruner', 'run_extended_grid', 'subprocess_launcher']

#: The search-space name of the backbone learning-rate multiplier.
LR_MULT = 'backbone_lr_mult'
ADAPTER = 'model.backbone.adapter'
#: The validation metric of each evaluator type, as mmengine logs it (CocoMetric: its first ``metric``).
METRICS: dict[str, Callable[[Mapping], str]] = {
    'CocoMetric': lambda ev: 'coco/{}_mAP'.format(ev.get('metric', 'bbox') if isinstance(ev.get('metric', 'bbox'), str)
                                                 else ev['metric'][0]),
    'IoUMetric': lambda ev: 'mIoU',
    'DOTAMetric': lambda ev: 'dota/mAP',
}
#: The pruners ``--pruner`` names (``auto``: median when the schedule validates more than once, else none).
PRUNERS = ('median', 'halving', 'hyperband', 'none')
#: The file that names the one study a work dir belongs to.
WORK_DIR_OWNER = 'study.json'
#: Marker a pruned run leaves in its work dir (written by :class:`~flora_mm.engine.hooks.OptunaPruningHook`).
PRUNED_MARKER = 'optuna_pruned.json'


class TrialFailed(RuntimeError):
    """A trial's training did not produce a result (diverged, crashed); the study records it as failed, goes on."""


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a method name, a string option


@dataclasses.dataclass(frozen=True)
class SearchParam:
    """One dimension of the search: ``kind`` 'log' / 'float' / 'int' (``low``..``high``), 'choice' or 'grid'
    (``values``)."""
    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    @classmethod
    def parse(cls, text: str) -> SearchParam:
        """``PATH=log:1e-5:1e-3``, ``PATH=int:2:16``, ``PATH=float:0:0.1``, ``PATH=choice:LoRA,FLoRA`` or a grid
        ``PATH=0.25,0.5,1``."""
        path, sep, spec = text.partition('=')
        if not sep or not path or not spec:
            raise ValueError(f'search parameter {text!r}: expected PATH=KIND:LOW:HIGH, PATH=choice:A,B or PATH=V1,V2')
        kind, _, rest = spec.partition(':')
        if kind in ('log', 'float', 'int'):
            bounds = rest.split(':')
            if len(bounds) != 2:
                raise ValueError(f'search parameter {text!r}: {kind} needs LOW:HIGH')
            low, high = (int(b) if kind == 'int' else float(b) for b in bounds)
            if not low < high or (kind == 'log' and low <= 0):
                raise ValueError(f'search parameter {text!r}: needs LOW < HIGH' + (' and LOW > 0' if kind == 'log' else ''))
            return cls(path, kind, low, high)
        if kind == 'choice':
            values = tuple(_value(v) for v in rest.split(','))
            return cls(path, 'choice', values=values)
        values = tuple(_value(v) for v in spec.split(','))
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f'search parameter {text!r}: the grid repeats a value')
        return cls(path, 'grid', values=values)

    @property
    def numeric_grid(self) -> bool:
        return self.kind == 'grid' and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    def suggest(self, trial) -> Any:
        """The trial's value (the sampler chooses; a grid value comes from the GridSampler)."""
        if self.kind in ('log', 'float'):
            return trial.suggest_float(self.path, self.low, self.high, log=self.kind == 'log')
        if self.kind == 'int':
            return trial.suggest_int(self.path, self.low, self.high)
        if self.numeric_grid:  # a numeric axis for the plots; GridSampler returns exactly the grid values
            lo, hi = min(self.values), max(self.values)
            if lo == hi:
                return trial.suggest_categorical(self.path, list(self.values))
            if all(isinstance(v, int) for v in self.values):
                return trial.suggest_int(self.path, lo, hi, log=lo > 0)
            return trial.suggest_float(self.path, lo, hi, log=lo > 0)
        return trial.suggest_categorical(self.path, list(self.values))

    def describe(self) -> str:
        if self.kind in ('log', 'float', 'int'):
            return f'{self.path}={self.kind}:{self.low}:{self.high}'
        return f'{self.path}={"choice:" if self.kind == "choice" else ""}{",".join(map(str, self.values))}'


def _lookup(cfg: Mapping, path: str) -> tuple[bool, list[str]]:
    """Whether the dotted ``path`` exists in ``cfg``; else the keys where it stops."""
    node: Any = cfg
    for i, key in enumerate(path.split('.')):
        if not isinstance(node, Mapping) or key not in node:
            keys = sorted(node) if isinstance(node, Mapping) else []
            return False, [f'{".".join(path.split(".")[:i]) or "<config>"} has {keys[:20]}']
        node = node[key]
    return True, []


def check_paths(cfg: Config, params: Sequence[SearchParam]) -> None:
    """Raise ``KeyError`` naming every search path that does not exist in ``cfg`` (before anything trains)."""
    bad, tree = [], cfg.to_dict()
    for p in params:
        if p.path == LR_MULT:
            if 'optim_wrapper' not in cfg:
                bad.append(f'{LR_MULT}: the config has no optim_wrapper')
            continue
        ok, where = _lookup(tree, p.path)
        if not ok:
            bad.append(f'{p.path} ({where[0]})')
    if bad:
        raise KeyError(f'{cfg.filename}: search path(s) not in the config: ' + '; '.join(bad)
                       + f'. Give existing dotted paths (set a missing key first with --cfg-options) or {LR_MULT}.')


def apply_params(cfg: Config, values: Mapping[str, Any]) -> None:
    """Write a trial's values into ``cfg`` (dotted paths; :data:`LR_MULT` as ``paramwise_cfg.custom_keys``)."""
    plain = {k: v for k, v in values.items() if k != LR_MULT}
    if plain:
        cfg.merge_from_dict(plain)
    if LR_MULT in values:
        mult = float(values[LR_MULT])
        keys = dict((cfg.optim_wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {})
        keys.setdefault('backbone', {})
        keys = {k: dict(v) for k, v in keys.items()}
        for key, options in keys.items():  # mmengine applies only the longest matching key: scale all of them
            if key == 'backbone' or key.startswith('backbone.'):
                options['lr_mult'] = options.get('lr_mult', 1.0) * mult
        cfg.merge_from_dict({'optim_wrapper.paramwise_cfg.custom_keys': keys})


def _dataset_signature(loader: Any) -> str:
    dataset = (loader or {}).get('dataset', {})
    keys = ('type', 'data_root', 'ann_file', 'data_prefix', 'indices', 'datasets', 'dataset')
    return json.dumps({k: dataset.get(k) for k in keys}, sort_keys=True, default=str)


def check_validation_split(cfg: Config) -> None:
    """Refuse a config whose validation data is its test data: tuning on it would choose settings on the very
    images a comparison reports. Raises ``ValueError`` saying how to give it a validation split."""
    if not cfg.get('val_cfg') or not cfg.get('val_dataloader') or not cfg.get('val_evaluator'):
        raise ValueError(f'{cfg.filename}: no validation loop (val_cfg / val_dataloader / val_evaluator): '
                         f'a study needs a validation metric')
    if cfg.get('test_dataloader') and _dataset_signature(cfg.val_dataloader) == _dataset_signature(cfg.test_dataloader):
        raise ValueError(f'{cfg.filename}: val_dataloader reads the same data as test_dataloader (the split the '
                         f'config marks as test); refusing to tune on it. Give the config a separate validation split '
                         f'(e.g. flora_mm.data.make_coco(num_test=...) and a test_dataloader on test2017/).')


def default_metric(cfg: Config) -> str:
    """The validation metric of the config's ``val_evaluator`` (:data:`METRICS`)."""
    evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    kind = str(evaluators[0].get('type', '')).split('.')[-1]
    if kind not in METRICS:
        raise ValueError(f'{cfg.filename}: no default metric for val_evaluator type {kind!r}; pass --metric '
                         f'(the key the validation log holds, e.g. coco/bbox_mAP)')
    return METRICS[kind](evaluators[0])


def count_validations(cfg: Config) -> int:
    """How many times the schedule validates (mmengine's loops: every ``val_interval`` from ``val_begin`` and at
    the end)."""
    train = cfg.get('train_cfg') or {}
    by_epoch = train.get('by_epoch', 'max_epochs' in train and 'IterBased' not in str(train.get('type', '')))
    total = int(train.get('max_epochs' if by_epoch else 'max_iters', 0))
    interval, begin = int(train.get('val_interval', 1)), int(train.get('val_begin', 1))
    return sum(1 for step in range(1, total + 1) if step >= begin and (step % interval == 0 or step == total))


def make_pruner(name: str):
    """An Optuna pruner by name (:data:`PRUNERS`)."""
    import optuna
    table = {'median': lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
             'halving': optuna.pruners.SuccessiveHalvingPruner, 'hyperband': optuna.pruners.HyperbandPruner,
             'none': optuna.pruners.NopPruner}
    if name not in table:
        raise ValueError(f'unknown pruner {name!r}; choose from {PRUNERS}')
    return table[name]()


def _exit_with_parent() -> None:  # a trial's process must not outlive a killed study (Linux)
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def subprocess_launcher(nproc: int = 1, cwd: Path | None = None,
                        env: Mapping[str, str] | None = None) -> Callable[[Path, Path, Path], None]:
    """How a trial trains: ``tools/train.py CONFIG --work-dir DIR``'s command line (:mod:`flora_mm.cli.train`;
    ``nproc`` > 1: under torchrun, as ``tools/dist_train.sh``) in ``cwd``, output to ``log``; raises
    :class:`TrialFailed` with the error line of the log when it fails."""
    def launch(config: Path, work_dir: Path, log: Path) -> None:
        args = [config, '--work-dir', work_dir]
        cmd = torchrun_command(TRAIN, nproc, args) if nproc > 1 else command(TRAIN, args)
        code = run_logged(cmd, log, cwd, env or {},
                          preexec_fn=_exit_with_parent if sys.platform == 'linux' else None)
        if code:
            raise TrialFailed(f'{failure_reason(log)} (exit {code}; log: {log})')
    return launch


def failure_reason(log: Path) -> str:
    """The last error line of a training log (``SomethingError: ...``), else its last line."""
    lines = [ln.strip() for ln in log.read_text(errors='replace').splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r'^[\w.]+(Error|Exception|Interrupt)\b', ln)]
    return (errors or lines or ['no output'])[-1][:500]


@dataclasses.dataclass
class StudySettings:
    """What a study searches and how (``tools/tune.py``'s options).

    Args:
        config: The mm config to tune (its validation split and metric are the objective).
        work_dir: Study folder: the SQLite storage, per-trial work dirs, best config, plots.
        params: The search space; all 'grid' for grid mode, none 'grid' otherwise.
        n_trials: Finished trials the study wants (a rerun continues towards it); grid mode: the grid size.
        metric: Validation metric (default: :func:`default_metric`); ``direction`` 'maximize' / 'minimize'.
        seeds: Training seeds per trial (the objective is their mean; the same seeds for every trial: paired).
        sampler_seed: Seed of the sampler (recorded with the study).
        pruner: One of :data:`PRUNERS` or 'auto'.
        storage: Optuna storage URL (default ``sqlite:///WORK_DIR/study.db``); study_name default: the config's.
        cfg_options: Fixed overrides applied to every trial (``--cfg-options``).
        heartbeat: Seconds between heartbeats of a running trial; a trial silent for 3 beats is failed and its
            parameters re-queued (a killed study resumes it).
        fixed_budget: Keep the adapter's trainable-parameter budget: each trial's ``model.backbone.adapter.rank``
            is solved (:func:`~flora_mm.models.budget.solve_rank`) to the budget of the config's own adapter, so
            e.g. ``model.backbone.adapter.kernel_rank`` or ``.type`` are compared at one budget.
    """
    config: Path
    work_dir: Path
    params: list[SearchParam]
    n_trials: int | None = None
    metric: str | None = None
    direction: str = 'maximize'
    seeds: tuple[int, ...] = (0, )
    sampler_seed: int = 0
    pruner: str = 'auto'
    storage: str | None = None
    study_name: str | None = None
    cfg_options: dict = dataclasses.field(default_factory=dict)
    heartbeat: int = 30
    fixed_budget: bool = False

    @property
    def grid(self) -> bool:
        return bool(self.params) and self.params[0].kind == 'grid'


def _commit(root: Path) -> str:
    try:
        return git(root, 'describe', '--always', '--dirty') or 'unknown'
    except OSError:  # no git
        return 'unknown'


class Study:
    """One Optuna study over ``settings.config``: :meth:`optimize` runs trials until ``n_trials`` have finished
    (or the grid is done), :meth:`finish` writes the best config, the table and the plots.

    Args:
        settings: The search (:class:`StudySettings`).
        launch: ``launch(config, work_dir, log)`` trains one run (:func:`subprocess_launcher`); raises
            :class:`TrialFailed` when the run fails.
        log: Where progress lines go (default: print).
        on_record: Called with each trial's record (what ``trial.json`` holds) once the trial has ended.
    """

    def __init__(self, settings: StudySettings, launch: Callable[[Path, Path, Path], None],
                 log: Callable[[str], None] = print, on_record: Callable[[dict], None] | None = None) -> None:
        import optuna
        self.settings, self.launch, self.log, self.on_record = settings, launch, log, on_record
        s = settings
        if not s.params:
            raise ValueError('empty search space: give at least one PATH=... (e.g. backbone_lr_mult=log:0.1:10)')
        kinds = {p.kind == 'grid' for p in s.params}
        if len(kinds) > 1:
            raise ValueError('a grid (PATH=V1,V2) cannot be mixed with sampled ranges (PATH=log:...) in one study')
        if len({p.path for p in s.params}) != len(s.params):
            raise ValueError('a search path is given twice')
        if s.fixed_budget and any(p.path == f'{ADAPTER}.rank' for p in s.params):
            raise ValueError(f'--fixed-budget solves {ADAPTER}.rank itself; do not search it')
        self.cfg = Config.fromfile(str(s.config))
        if s.cfg_options:
            self.cfg.merge_from_dict(s.cfg_options)
        check_paths(self.cfg, s.params)
        check_validation_split(self.cfg)
        self.metric = s.metric or default_metric(self.cfg)
        self.validations = count_validations(self.cfg)
        pruner = s.pruner if s.pruner != 'auto' else ('median' if self.validations > 1 and len(s.seeds) == 1
                                                      else 'none')
        if pruner != 'none' and len(s.seeds) > 1:
            raise ValueError('pruning reports one run per trial; with several --seeds use --pruner none')
        self.pruner = pruner
        s.work_dir.mkdir(parents=True, exist_ok=True)
        self.storage_url = s.storage or f'sqlite:///{(s.work_dir / "study.db").resolve()}'
        self.name = s.study_name or s.config.stem
        with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                self.storage_url, heartbeat_interval=s.heartbeat, grace_period=3 * s.heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        if s.grid:
            sampler = optuna.samplers.GridSampler({p.path: list(p.values) for p in s.params}, seed=s.sampler_seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=s.sampler_seed)
        self._claim_work_dir(storage)
        self.study = optuna.create_study(storage=storage, study_name=self.name, direction=s.direction,
                                         sampler=sampler, pruner=make_pruner(pruner), load_if_exists=True)
        self._check_same_study()
        self.n_trials = math.prod(len(p.values) for p in s.params) if s.grid else s.n_trials
        if not self.n_trials:
            raise ValueError('give the number of trials (--n-trials) for a sampled search space')
        self._start = time.time()

    def _spec(self) -> dict:
        s = self.settings
        return dict(config=str(s.config), params=[p.describe() for p in s.params], metric=self.metric,
                    direction=s.direction, seeds=list(s.seeds), sampler='grid' if s.grid else 'tpe',
                    sampler_seed=s.sampler_seed, cfg_options={k: repr(v) for k, v in s.cfg_options.items()})

    def _claim_work_dir(self, storage) -> None:
        """One work dir, one study: its ``trial_NNNN`` dirs are numbered per study, so a second study there would
        overwrite the first one's trials, best config and plots. The owner is recorded in ``study.json``; a work dir
        from before that record is adopted only if no other study shares its storage."""
        import optuna
        marker = self.settings.work_dir / WORK_DIR_OWNER
        if marker.exists():
            owner = json.loads(marker.read_text())['study_name']
        else:
            others = sorted(set(optuna.get_all_study_names(storage)) - {self.name})
            legacy = any(self.settings.work_dir.glob('trial_*'))
            owner = others[0] if legacy and others and self.settings.storage is None else self.name
        if owner != self.name:
            raise ValueError(f'work dir {self.settings.work_dir} holds the trials of study {owner!r}; study '
                             f'{self.name!r} would overwrite them (trial dirs are numbered per study): give it '
                             f'another --work-dir')
        marker.write_text(json.dumps(dict(study_name=self.name, storage=self.storage_url), indent=1) + '\n')

    def _check_same_study(self) -> None:
        stored = self.study.user_attrs.get('spec')
        spec = self._spec()
        if stored is None:
            self.study.set_user_attr('spec', spec)
        elif stored != spec:
            diff = {k: (stored.get(k), v) for k, v in spec.items() if stored.get(k) != v}
            raise ValueError(f'study {self.name!r} in {self.storage_url} was created with other settings '
                             f'(stored, now): {diff}; use another --work-dir (with a shared --storage, also another '
                             f'--study-name)')

    # -- trials --------------------------------------------------------------------------------------------------
    def trial_config(self, values: Mapping[str, Any], seed: int, hooks: Sequence[dict] = ()) -> Config:
        """The config a trial trains: the study's config, ``--cfg-options``, the trial's values, the seed."""
        cfg = Config.fromfile(str(self.settings.config))
        if self.settings.cfg_options:
            cfg.merge_from_dict(self.settings.cfg_options)
        apply_params(cfg, values)
        cfg.merge_from_dict({'randomness.seed': seed})
        if self.settings.fixed_budget:
            cfg.merge_from_dict({f'{ADAPTER}.rank': self.budget_rank(cfg)})
        cfg.custom_hooks = [*(cfg.get('custom_hooks') or []), *hooks]
        return cfg

    def budget_rank(self, cfg: Config) -> int:
        """The adapter rank of ``cfg`` whose budget is closest to that of the study config's own adapter."""
        from mmengine.registry import init_default_scope
        from ..models.budget import adapter_budget, solve_rank
        adapter = (cfg.model.backbone.get('adapter') or {})
        if 'rank' not in adapter:
            raise ValueError(f'--fixed-budget: the trial\'s adapter {adapter.get("type")!r} has no rank to solve')
        init_default_scope(self.cfg.get('default_scope'))
        target = adapter_budget(self.cfg.model.backbone, self.cfg.model.backbone.adapter)[0]
        return solve_rank(cfg.model.backbone, adapter, target)[0]

    def _objective(self, trial) -> float:
        import optuna
        s = self.settings
        values = {p.path: p.suggest(trial) for p in s.params}
        trial_dir = s.work_dir / f'trial_{trial.number:04d}'
        start, scores = time.time(), []
        record = dict(number=trial.number, params=values, seeds=list(s.seeds), metric=self.metric,
                      commit=_commit(Path(__file__).resolve().parents[2]))
        try:
            for i, seed in enumerate(s.seeds):
                run_dir = trial_dir / f'seed_{seed}'
                hooks = [dict(type='FiniteLossHook')]
                if i == 0 and self.pruner != 'none':
                    hooks.append(dict(type='OptunaPruningHook', storage=self.storage_url, study_name=self.name,
                                      trial_id=trial._trial_id, metric=self.metric, pruner=self.pruner))
                config = run_dir / 'config.py'
                run_dir.mkdir(parents=True, exist_ok=True)
                self.trial_config(values, seed, hooks).dump(str(config))
                self.launch(config, run_dir, run_dir / 'train.log')
                record.setdefault('configs', []).append(str(config))
                if (run_dir / PRUNED_MARKER).exists():
                    record.update(state='PRUNED', **json.loads((run_dir / PRUNED_MARKER).read_text()))
                    raise optuna.TrialPruned(f'pruned at step {record.get("step")}')
                scores.append(float(last_validation(run_dir, self.metric)[self.metric]))
                trial.set_user_attr(f'seed_{seed}', scores[-1])
            value = sum(scores) / len(scores)
            if not math.isfinite(value):
                raise TrialFailed(f'{self.metric} is {value}')
            record.update(state='COMPLETE', value=value, scores=scores)
        except TrialFailed as err:
            trial.set_user_attr('fail_reason', str(err))
            record.update(state='FAIL', fail_reason=str(err))
            raise
        except KeyboardInterrupt:  # Optuna fails the trial; its parameters go back in the queue for the rerun
            record.update(state='INTERRUPTED')
            frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback()(trial.study, frozen)
            raise
        finally:
            record['minutes'] = round((time.time() - start) / 60, 3)
            trial_dir.mkdir(parents=True, exist_ok=True)
            (trial_dir / 'trial.json').write_text(json.dumps(record, indent=2, default=str) + '\n')
            if self.on_record is not None and record.get('state') != 'INTERRUPTED':
                self.on_record(dict(record, trial_dir=str(trial_dir)))
        return value

    def finished(self) -> list:
        """Trials that ran to an outcome: complete, pruned, or failed with a reason (not interrupted ones)."""
        import optuna
        states = optuna.trial.TrialState
        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state in (states.COMPLETE, states.PRUNED)
                or (t.state == states.FAIL and 'fail_reason' in t.user_attrs)]

    def _after_trial(self, study, trial) -> None:
        done = len(self.finished())
        try:
            best = f'best {study.best_value:.4f} (trial {study.best_trial.number})'
        except ValueError:
            best = 'no complete trial yet'
        value = f'{trial.value:.4f}' if trial.value is not None else trial.user_attrs.get('fail_reason', '')
        self.log(f'[tune] trial {trial.number} {trial.state.name.lower()} {value} | {done}/{self.n_trials} | '
                 f'{best} | {(time.time() - self._start) / 60:.1f} min')
        if done >= self.n_trials:
            study.stop()

    def optimize(self) -> None:
        """Run trials until ``n_trials`` have finished; a rerun continues (finished trials are not repeated; the
        parameters of a trial whose process died are run again)."""
        import optuna
        if len(self.finished()) >= self.n_trials:
            self.log(f'[tune] study {self.name!r}: {self.n_trials} trials already finished')
            return
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study.optimize(self._objective, callbacks=[self._after_trial], catch=(TrialFailed, ),
                            gc_after_trial=True)

    # -- results -------------------------------------------------------------------------------------------------
    def table(self) -> str:
        """The summary table: one row per trial (number, state, values, metric, minutes)."""
        paths = [p.path for p in self.settings.params]
        rows = [['trial', 'state', *paths, self.metric, 'minutes']]
        for t in self.study.get_trials(deepcopy=False):
            record = self.settings.work_dir / f'trial_{t.number:04d}' / 'trial.json'
            minutes = json.loads(record.read_text()).get('minutes') if record.exists() else None
            rows.append([str(t.number), t.state.name.lower(), *(_fmt(t.params.get(p)) for p in paths),
                         _fmt(t.value), _fmt(minutes)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        return '\n'.join([lines[0], '-' * len(lines[0]), *lines[1:]])

    def finish(self) -> dict:
        """Write ``trials.json``, ``best_config.py`` (the best trial, ready to train, first seed) and the plots;
        the summary (best trial, its value and parameters, files written)."""
        s, out = self.settings, {}
        trials = [dict(number=t.number, state=t.state.name, params=t.params, value=t.value,
                       user_attrs=t.user_attrs) for t in self.study.get_trials(deepcopy=False)]
        (s.work_dir / 'trials.json').write_text(json.dumps(trials, indent=2, default=str) + '\n')
        complete = [t for t in trials if t['state'] == 'COMPLETE']
        if complete:
            best = self.study.best_trial
            config = s.work_dir / 'best_config.py'
            self.trial_config(best.params, s.seeds[0]).dump(str(config))
            out = dict(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_config=str(config))
        out['plots'] = self.plots()
        (s.work_dir / 'best.json').write_text(json.dumps(out, indent=2, default=str) + '\n')
        return out

    def plots(self) -> list[str]:
        """Optuna's matplotlib plots as PNG: optimisation history, the metric against each parameter, and the
        intermediate values when trials were pruned against them."""
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        import optuna
        import optuna.visualization.matplotlib as vis
        if not any(t.state.name == 'COMPLETE' for t in self.study.get_trials(deepcopy=False)):
            return []
        plots = {'history': vis.plot_optimization_history, 'slice': vis.plot_slice}
        if self.pruner != 'none':
            plots['intermediate'] = vis.plot_intermediate_values
        written = []
        for name, plot in plots.items():
            with warnings.catch_warnings():  # Optuna's matplotlib plots are 'experimental'
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                axes = plot(self.study)
            first = axes.flat[0] if hasattr(axes, 'flat') else axes
            path = self.settings.work_dir / f'{name}.png'
            first.figure.savefig(path, dpi=100, bbox_inches='tight')
            plt.close(first.figure)
            written.append(str(path))
        return written


def _fmt(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)


# -- the edge rule ---------------------------------------------------------------------------------------------------
def edge_extension(results: Mapping[float, float | None], direction: str = 'maximize',
                   factor: float | None = None) -> float | None:
    """The grid point the edge rule asks for next: None when the best result is interior, else the point one step
    beyond the edge it sits on. A failed point (None, NaN) counts as worst; of tied points the smallest wins.

    Args:
        results: Metric by grid point (positive numbers: the grid is read as log-spaced).
        direction: 'maximize' or 'minimize'.
        factor: The step beyond an edge (default: the ratio of the two outermost points on that side).
    """
    points = sorted(results)
    if len(points) < 2 or points[0] <= 0:
        raise ValueError(f'the edge rule needs at least two positive grid points, got {points}')
    sign = 1 if direction == 'maximize' else -1

    def score(point: float) -> float:
        value = results[point]
        return sign * value if value is not None and math.isfinite(value) else -math.inf
    best = max(points, key=score)
    if best == points[0]:
        return points[0] / (factor or points[1] / points[0])
    if best == points[-1]:
        return points[-1] * (factor or points[-1] / points[-2])
    return None


def grid_results(studies: Sequence[Study]) -> dict[float, float | None]:
    """Metric by grid point over one-parameter grid studies (a failed or pruned trial: None)."""
    out: dict[float, float | None] = {}
    for study in studies:
        path = study.settings.params[0].path
        for trial in study.finished():
            out[trial.params[path]] = trial.value if trial.state.name == 'COMPLETE' else None
    return out


def run_extended_grid(settings: StudySettings, launch: Callable[[Path, Path, Path], None], max_extensions: int,
                      log: Callable[[str], None] = print) -> dict:
    """Run a one-parameter numeric grid, then extend it one point at a time beyond the edge its best value sits on
    (:func:`edge_extension`) until the best is interior or ``max_extensions`` points are added. Each extension is a
    study of its own in ``WORK_DIR/extend_<value>/`` (same seeds, options and storage kind); resumable like any
    study. Writes ``WORK_DIR/grid.json`` (metric by point, the selection, whether it is still at an edge) and
    ``WORK_DIR/best_config.py`` of the selection over all points; returns what ``grid.json`` holds."""
    if (not settings.grid or len(settings.params) != 1 or not settings.params[0].numeric_grid
            or len(settings.params[0].values) < 2 or min(settings.params[0].values) <= 0):
        raise ValueError('--extend needs a grid of at least two positive values of one parameter (log-spaced, e.g. '
                         '--grid backbone_lr_mult=0.25,1,4)')
    studies = [Study(settings, launch, log=log)]
    studies[0].optimize()
    base_name, param = studies[0].name, settings.params[0]
    while (point := edge_extension(grid_results(studies), settings.direction)) is not None:
        if len(studies) > max_extensions:
            break
        log(f'[tune] the best {studies[0].metric} is at an edge of the grid: extending it to {param.path}={point:g}')
        extra = dataclasses.replace(settings, work_dir=settings.work_dir / f'extend_{point:g}',
                                    params=[dataclasses.replace(param, values=(point, ))], n_trials=None,
                                    study_name=f'{base_name}_extend_{point:g}')
        studies.append(Study(extra, launch, log=log))
        studies[-1].optimize()
    for study in studies:
        study.finish()
    results = grid_results(studies)
    sign = 1 if settings.direction == 'maximize' else -1
    complete = {k: v for k, v in results.items() if v is not None and math.isfinite(v)}
    summary = dict(param=param.path, metric=studies[0].metric, results={f'{k:g}': v for k, v in sorted(results.items())},
                   extensions=[s.settings.work_dir.name for s in studies[1:]])
    if complete:
        selected = max(sorted(complete), key=lambda k: sign * complete[k])
        config = settings.work_dir / 'best_config.py'
        studies[0].trial_config({param.path: selected}, settings.seeds[0]).dump(str(config))
        summary.update(selected=selected, value=complete[selected], best_config=str(config),
                       at_edge=edge_extension(results, settings.direction) is not None)
    (settings.work_dir / 'grid.json').write_text(json.dumps(summary, indent=1) + '\n')
    return summary

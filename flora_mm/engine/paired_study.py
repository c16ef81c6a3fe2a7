"""The untuned paired study (docs/reproduction.md; ``tools/reproduce.py`` is its command line): adaptation runs on
the shifted target domains: every method, paired seeds, one JSON per run.

    tools/reproduce.py --tasks dota ade20k --methods zero_shot base full --seeds 0   # the bracket (calibration)
    tools/reproduce.py --seeds 0 1 2 3 4 --jobs 2              # the grid: 3 tasks x 9 methods x 5 seeds
    tools/reproduce.py --methods flora --mechanisms depthwise optimizer lora_scale flora_scale   # the mechanisms
    tools/reproduce.py --tasks coco --methods flora --seeds 0 --repeat 1   # the same run again (noise)
    tools/reproduce.py --aggregate-only --plots docs/img --doc docs/reproduction.md --readme README.md   # report

Each task starts from its shipped *source* model (``flora_mm://..._source_...``, see tools/make_source_models.py)
and fine-tunes it on the shifted target data (``flora_mm.data``, ``shift=True``, generated on first use) through
``tools/train.py``, the method switched with ``--cfg-options`` on the task's target config (or a variant's own
config); ``zero_shot`` evaluates the source model with ``tools/test.py``. The seed fixes data order and new-layer
initialisation, so runs pair across methods. Finished runs (``runs/<task>/<method>_s<seed>[_r<k>].json``) are
skipped: the grid spans sittings. ``--jobs N`` runs N at a time with cores / N threads each (on 2 cores, two
single-thread runs at once did ~1.45x the runs per hour of one two-thread run at a time: COCO LoRA 3.1 min per run
against 2.2 min; the thread count changes float summation order, so it is recorded in every run file and a seed's
runs should share it).
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flora_mm import docblocks

from .analysis import holm, t_interval
from .runs import git, test_config, train_config
from .targets import TASKS

__all__ = ['GRID', 'GRID_PAIRS', 'HEADLINE_PAIRS', 'MECHANISMS', 'METHODS', 'MIN_SEEDS', 'PAIRS', 'UNTUNED_LR_MULT',
           'Variant', 'aggregate', 'headline', 'headline_mark', 'planned_runs', 'plot', 'render', 'run_one',
           'run_overrides', 'summarize', 'trainable_backbone_params']

MIN_SEEDS = 5  # paired seeds a comparison needs (issue #16)
ADAPTER = 'model.backbone.adapter'


def adapter(**options) -> dict:
    """``--cfg-options`` that change these options of the target config's adapter (FLoRA rank 10, r3 = 2, s = 4)."""
    return {f'{ADAPTER}.{key}': value for key, value in options.items()}


LORA = adapter(type='LoRA', scale=1.0)
#: The untuned protocol trains every adapter at the config's learning rate (x1), whatever its method's declared
#: ``lr_mult`` (flora_mm.engine.defaults moved some defaults after this record was made).
UNTUNED_LR_MULT = {f'{ADAPTER}.lr_mult': 1.0}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One column of the comparison.

    Args:
        overrides: ``--cfg-options`` applied to the task's target config (which is FLoRA at LoRA r=2's budget).
        tasks: The tasks it runs on (``None``: all).
        configs: Per task, a config to train instead of the task's target config (e.g. another optimizer).
    """
    overrides: Mapping[str, Any]
    tasks: tuple[str, ...] | None = None
    configs: Mapping[str, str] | None = None

    def runs_on(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def config(self, task: str) -> str:
        return (self.configs or {}).get(task, TASKS[task]['config'])


#: The grid: every method on every task. Ranks at matched budgets come from ``flora_mm.models.budget.match_budget``
#: (FLoRA rank 10 ~ LoRA r=2: 215,797 vs 226,392 adapter parameters; rank 40 ~ LoRA r=8: 905,197 vs 905,568).
GRID = {
    'zero_shot': Variant({ADAPTER: None, 'model.backbone.frozen_stages': 4}),
    'base': Variant({ADAPTER: None, 'model.backbone.frozen_stages': 4}),
    'full': Variant({ADAPTER: None}),
    'bitfit': Variant(adapter(type='BitFit')),
    'lora': Variant({**LORA, **adapter(rank=2)}),
    'dora': Variant(adapter(type='DoRA', rank=2, scale=1.0)),
    'flora': Variant({}),
    'lora_4x': Variant({**LORA, **adapter(rank=8)}),
    'flora_4x': Variant(adapter(rank=40)),
}
GRID_PAIRS = (('flora', 'lora'), ('flora', 'dora'), ('flora', 'base'), ('lora', 'base'), ('dora', 'lora'),
              ('bitfit', 'base'), ('full', 'base'), ('full', 'flora'), ('flora_4x', 'lora_4x'),
              ('flora_4x', 'flora'), ('lora_4x', 'lora'))
DOTA_SGD = 'configs/target/oriented-rcnn-le90_convnextv2-atto_flora-r10_sgd-400it_target-dota.py'
#: The paper's mechanisms, each a controlled comparison on one task: its variants and the pairs that test it.
MECHANISMS = {
    # loralib's ConvLoRA spends 181,496 of LoRA r=2's 226,392 parameters on the 7x7 depthwise convs (rank r*k = 14
    # on a [C*7, 7] reshape: any update of those kernels); FLoRA with r3 = 2 confines them to a 2x2 kernel core.
    # Without the depthwise convs LoRA r=2 has 44,896 parameters; FLoRA's closest rank is 2 (38,766).
    'depthwise': dict(variants={
        'lora_no_dw': Variant({**LORA, **adapter(rank=2, exclude=['conv_dw'])}, tasks=('coco', )),
        'flora_no_dw': Variant(adapter(rank=2, exclude=['conv_dw']), tasks=('coco', )),
        'flora_k7': Variant(adapter(kernel_rank=7), tasks=('coco', )),  # 222,413 parameters
    }, pairs=(('flora_no_dw', 'lora_no_dw'), ('flora_k7', 'flora'), ('flora_k7', 'lora'))),
    # the paper's DOTA recipe: SGD lr 5e-3, momentum 0.9, weight decay 1e-4 (heads included), instead of AdamW 2e-4
    'optimizer': dict(variants={
        'lora_sgd': Variant({**LORA, **adapter(rank=2)}, configs={'dota': DOTA_SGD}, tasks=('dota', )),
        'flora_sgd': Variant({}, configs={'dota': DOTA_SGD}, tasks=('dota', )),
    }, pairs=(('flora_sgd', 'lora_sgd'), ('flora_sgd', 'flora'), ('lora_sgd', 'lora'))),
    # loralib's default alpha = 1, i.e. scale = alpha / r = 0.5 at r = 2, against our scale 1; and LoRA at FLoRA's
    # s = 4, which tells whether FLoRA's edge or deficit is its scale (an effective learning rate) or its form
    'lora_scale': dict(variants={
        'lora_alpha1': Variant({**LORA, **adapter(rank=2, scale=0.5)}, tasks=('coco', )),
        'lora_scale4': Variant({**LORA, **adapter(rank=2, scale=4.0)}, tasks=('coco', )),
    }, pairs=(('lora', 'lora_alpha1'), ('lora_scale4', 'lora'), ('flora', 'lora_scale4'))),
    # FLoRA's s: the paper's 4 (our default) against 1 and 0.25, and above it: 16 is 4x FLoRA's default as LoRA's
    # s = 4 is 4x LoRA's, so FLoRA s = 16 against LoRA s = 4 asks whether FLoRA's deficit there is its scale
    'flora_scale': dict(variants={
        'flora_scale1': Variant(adapter(scale=1.0), tasks=('coco', )),
        'flora_scale0.25': Variant(adapter(scale=0.25), tasks=('coco', )),
        'flora_scale8': Variant(adapter(scale=8.0), tasks=('coco', )),
        'flora_scale16': Variant(adapter(scale=16.0), tasks=('coco', )),
    }, pairs=(('flora', 'flora_scale1'), ('flora', 'flora_scale0.25'), ('flora_scale1', 'flora_scale0.25'),
              ('flora_scale8', 'flora'), ('flora_scale16', 'flora'), ('flora_scale16', 'lora_scale4'))),
}
METHODS = {**GRID, **{name: v for m in MECHANISMS.values() for name, v in m['variants'].items()}}
PAIRS = GRID_PAIRS + tuple(pair for m in MECHANISMS.values() for pair in m['pairs'])
PAIR_GROUP = {**{pair: 'grid' for pair in GRID_PAIRS},
              **{pair: name for name, m in MECHANISMS.items() for pair in m['pairs']}}


_BUILD_LOCK = threading.Lock()  # the registries' default scope is global: one budget count at a time


def trainable_backbone_params(config: Path, zero_shot: bool = False) -> dict:
    """Trainable and total parameters of the backbone of ``config`` (the config a run dumped into its work dir, so
    the count is of what ran), counted on the built module."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from flora_mm.models.budget import trainable_parameters
    with _BUILD_LOCK:
        cfg = Config.fromfile(str(config))
        init_default_scope(cfg.default_scope)
        trainable, total = trainable_parameters(cfg.model.backbone)
    return dict(backbone_trainable=0 if zero_shot else trainable, backbone_params=total)


def _commit(repo: Path) -> str:
    """The code commit, ``+dirty`` when the package, tools or configs differ from it."""
    dirty = git(repo, 'status', '--porcelain', '--untracked-files=no', '--', 'flora_mm', 'tools', 'configs')
    return (git(repo, 'rev-parse', '--short', 'HEAD') or 'unknown') + ('+dirty' if dirty else '')


def run_overrides(task: str, method: str, seed: int, quick: bool = False) -> dict:
    """The ``--cfg-options`` of one run: the variant's, any adapter at x1 (:data:`UNTUNED_LR_MULT`), the seed and
    the quick schedule's."""
    overrides = METHODS[method].overrides
    pin = {} if overrides.get(ADAPTER, 0) is None else UNTUNED_LR_MULT  # None: the variant has no adapter
    return dict(overrides, **pin, **{'randomness.seed': seed}, **(TASKS[task]['quick'] if quick else {}))


def run_one(out: Path, task: str, method: str, seed: int, repeat: int, quick: bool, root: Path,
            threads: int, repo: Path) -> dict:
    """Train (or, for ``zero_shot``, evaluate) one (task, method, seed) with ``threads`` CPU threads; its JSON.
    ``root``: where the target data and work dirs go; ``repo``: the checkout whose configs run (and whose commit
    the run file records)."""
    name = f'{method}_s{seed}' + (f'_r{repeat}' if repeat else '')
    path = out / 'runs' / task / f'{name}.json'
    if path.exists():
        return json.loads(path.read_text())
    spec, variant = TASKS[task], METHODS[method]
    work_dir = root / 'work_dirs' / 'adaptation' / out.name / task / name  # logs and checkpoints stay out of out/
    overrides = run_overrides(task, method, seed, quick)
    config_name = variant.config(task)
    config = repo / config_name
    env = dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f'[{task}] {name} ...', flush=True)
    start = time.time()
    if method == 'zero_shot':
        metrics = test_config(config, spec['source'], work_dir, overrides, cwd=root,
                              log=work_dir / 'test.log', env=env, split='val')  # the split the study reports
    else:
        metrics = train_config(config, work_dir, overrides, spec['metric'], cwd=root,
                               log=work_dir / 'train.log', env=env)
    minutes = round((time.time() - start) / 60, 2)
    result = dict(task=task, method=method, seed=seed, repeat=repeat, config=config_name,
                  overrides=variant.overrides,
                  budget=trainable_backbone_params(work_dir / config.name, method == 'zero_shot'),
                  metrics={k: metrics[k] for k in (spec['metric'], *spec['extra']) if k in metrics},
                  minutes=minutes, threads=threads, commit=_commit(repo), quick=quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + '\n')
    print(f'[{task}] {name}: {spec["metric"]} {result["metrics"].get(spec["metric"], float("nan")):.4f} '
          f'in {result["minutes"]:.1f} min', flush=True)
    return result


def _verdict(a: str, b: str, low: float, high: float, seeds: int) -> str:
    """``resolved: a > b`` / ``resolved: a < b`` when the interval excludes 0, else ``not resolved``; marked
    provisional below ``MIN_SEEDS`` paired seeds."""
    verdict = f'resolved: {a} > {b}' if low > 0 else f'resolved: {a} < {b}' if high < 0 else 'not resolved'
    return verdict if seeds >= MIN_SEEDS else f'{verdict} (provisional: {seeds} seeds)'


def summarize(runs: list[dict]) -> dict:
    """Every per-seed value, the paired differences (mean, 95% t interval, p, Holm-adjusted p over every paired
    comparison of the design, verdict), the same-seed repeats and the cost, from the run files' contents."""
    summary: dict = dict(methods=[], pairs=[], repeats=[], cost={}, short={})
    for task, spec in TASKS.items():
        mine = [r for r in runs if r['task'] == task]
        if not mine:
            continue
        scale = spec['to_percent']
        value = {(r['method'], r['seed']): scale * r['metrics'][spec['metric']] for r in mine if not r['repeat']}
        for method in METHODS:
            seeds = sorted(s for m, s in value if m == method)
            if not seeds:
                continue
            vals = [value[(method, s)] for s in seeds]
            summary['methods'].append(dict(
                task=task, method=method, seeds=seeds, values=vals,
                budget=next(r['budget'] for r in mine if r['method'] == method), mean=statistics.mean(vals),
                std=statistics.stdev(vals) if len(vals) > 1 else 0.0))
        summary['short'][task] = {m['method']: len(m['seeds']) for m in summary['methods'] if m['task'] == task
                                  and m['method'] != 'zero_shot' and len(m['seeds']) < MIN_SEEDS}
        for a, b in PAIRS:
            seeds = sorted(s for m, s in value if m == a and (b, s) in value)
            if len(seeds) < 2:
                continue
            diffs = [value[(a, s)] - value[(b, s)] for s in seeds]
            low, high, p = t_interval(diffs)
            summary['pairs'].append(dict(task=task, group=PAIR_GROUP[(a, b)], a=a, b=b, seeds=seeds, diffs=diffs,
                                         mean=statistics.mean(diffs), ci95=[low, high], p=p,
                                         verdict=_verdict(a, b, low, high, len(seeds))))
        threads = {(r['method'], r['seed']): r.get('threads') for r in mine if not r['repeat']}
        for r in sorted((r for r in mine if r['repeat']), key=lambda r: (r['method'], r['seed'], r['repeat'])):
            first = value.get((r['method'], r['seed']))
            if first is not None:
                again = scale * r['metrics'][spec['metric']]
                summary['repeats'].append(dict(
                    task=task, method=r['method'], seed=r['seed'], repeat=r['repeat'], first=first, again=again,
                    difference=again - first, threads=[threads[(r['method'], r['seed'])], r.get('threads')]))
        summary['cost'][task] = dict(runs=len(mine), minutes=round(sum(r['minutes'] for r in mine), 2),
                                     cpu_minutes=round(sum(r['minutes'] * r.get('threads', 2) for r in mine), 2))
    for pair, adjusted in zip(summary['pairs'], holm([p['p'] for p in summary['pairs']])):
        pair['p_holm'] = adjusted
    return summary


def _p(value: float) -> str:
    return '<0.001' if value < 0.001 else f'{value:.3f}'


def render(summary: dict) -> str:
    """``summary.md``: per task the methods' per-seed values, the paired differences by group, the repeats, the cost."""
    lines = []
    for task, cost in summary['cost'].items():
        lines += [f'\n### {task} ({TASKS[task]["metric"]}, %)\n', '| method | trainable backbone params | seeds | '
                  'mean ± std | per seed |', '|---|---:|---:|---:|---|']
        lines += [f'| {m["method"]} | {m["budget"]["backbone_trainable"]:,} | {len(m["seeds"])} | '
                  f'{m["mean"]:.2f} ± {m["std"]:.2f} | '
                  f'{", ".join(f"{s}: {v:.1f}" for s, v in zip(m["seeds"], m["values"]))} |'
                  for m in summary['methods'] if m['task'] == task]
        if summary['short'][task]:
            lines.append(f'\nFewer than {MIN_SEEDS} seeds so far: '
                         + ', '.join(f'{m} ({n})' for m, n in summary['short'][task].items()) + '.')
        groups: dict[str, list[str]] = {}
        for p in (p for p in summary['pairs'] if p['task'] == task):
            groups.setdefault(p['group'], []).append(
                f'| {p["a"]} - {p["b"]} | {len(p["seeds"])} | {p["mean"]:+.2f} | [{p["ci95"][0]:+.2f}, '
                f'{p["ci95"][1]:+.2f}] | {_p(p["p"])} | {_p(p["p_holm"])} | {p["verdict"]} |')
        for group, rows in groups.items():
            title = 'paired difference' if group == 'grid' else f'mechanism: {group}'
            lines += ['', f'| {title} | seeds | mean | 95% CI (t) | p | p (Holm) | verdict |',
                      '|---|---:|---:|---:|---:|---:|---|', *rows]
        repeats = [r for r in summary['repeats'] if r['task'] == task]
        if repeats:
            lines += ['', '| same run repeated: method | seed | repeat | threads (run / repeat) | run | repeat | '
                      'difference |', '|---|---:|---:|---:|---:|---:|---:|']
            lines += [f'| {r["method"]} | {r["seed"]} | {r["repeat"]} | {r["threads"][0]} / {r["threads"][1]} | '
                      f'{r["first"]:.2f} | {r["again"]:.2f} | {r["difference"]:+.2f} |' for r in repeats]
        lines.append(f'\n{cost["runs"]} runs, {cost["minutes"]:.0f} run-minutes '
                     f'({cost["cpu_minutes"]:.0f} CPU-core-minutes).')
    if len(summary['cost']) > 1:
        total = {key: sum(c[key] for c in summary['cost'].values()) for key in ('runs', 'minutes', 'cpu_minutes')}
        lines.append(f'\nAll tasks: {total["runs"]} runs, {total["minutes"]:.0f} run-minutes '
                     f'({total["cpu_minutes"]:.0f} CPU-core-minutes).')
    if summary['pairs']:
        lines.append(f'\np: two-sided paired t test; p (Holm): adjusted over all {len(summary["pairs"])} paired '
                     'comparisons above (every task and mechanism), family-wise error 5% where it is below 0.05.')
    return '\n'.join(lines).strip() + '\n'


def aggregate(out: Path, plots: Path | None = None, doc: Path | None = None, readme: Path | None = None) -> str:
    """``summary.json`` (:func:`summarize`) and ``summary.md`` (:func:`render`) from the run files; optionally
    per-seed plots, the report's block (``doc``) and the headline table (``readme``) of Markdown pages."""
    summary = summarize([json.loads(p.read_text()) for p in sorted((out / 'runs').glob('*/*.json'))])
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    table = render(summary)
    (out / 'summary.md').write_text(table)
    if plots is not None:
        plot(summary, plots)
    if doc is not None:
        replace_block(doc, table, 'summary')
    if readme is not None:
        replace_block(readme, headline(summary), 'headline')
    return table


def markers(name: str) -> tuple[str, str]:
    """The comment lines that delimit a generated block ``name`` of a Markdown page."""
    return docblocks.markers('tools/reproduce.py', name)


def replace_block(doc: Path, text: str, name: str) -> None:
    """Replace what lies between the ``markers(name)`` of ``doc`` with ``text``."""
    docblocks.replace_block(doc, text, 'tools/reproduce.py', name)


HEADLINE_PAIRS = (('flora', 'lora'), ('flora', 'dora'), ('flora', 'base'), ('full', 'flora'))


def _state(pair: dict) -> str:
    """How a paired difference stands: ``'resolved'`` (its interval excludes 0 on at least ``MIN_SEEDS`` seeds and it
    survives Holm's correction over the design), ``'resolved, not after Holm'``, ``'provisional'`` (resolved on
    fewer seeds) or ``'not resolved'``; the README table marks and the plots colour by it."""
    if not pair['verdict'].startswith('resolved'):
        return 'not resolved'
    if 'provisional' in pair['verdict']:
        return 'provisional'
    return 'resolved' if pair['p_holm'] < 0.05 else 'resolved, not after Holm'


def headline_mark(pair: dict) -> str:
    return {'resolved': ' **resolved**', 'resolved, not after Holm': ' **resolved**†',
            'provisional': ' resolved (provisional)', 'not resolved': ''}[_state(pair)]


def headline(summary: dict) -> str:
    """The README's table: the grid's mean ± std per task and the main paired differences with their intervals."""
    tasks = list(TASKS)  # every task, '-' where nothing ran yet
    row = {(m['task'], m['method']): m for m in summary['methods']}
    head = ' | '.join(f'{t} ({TASKS[t]["metric"]})' for t in tasks)
    lines = [f'| method | trainable backbone params | {head} |', '|---|---:|' + '---:|' * len(tasks)]
    for method in GRID:
        cells = [row.get((t, method)) for t in tasks]
        if not any(cells):
            continue
        budget = next(c for c in cells if c)['budget']['backbone_trainable']
        lines.append(f'| {method} | {budget:,} | ' + ' | '.join(
            f'{c["mean"]:.1f} ± {c["std"]:.1f} ({len(c["seeds"])})' if c else '-' for c in cells) + ' |')
    pair = {(p['task'], p['a'], p['b']): p for p in summary['pairs']}
    lines += ['', f'| paired difference, mean [95% CI] (seeds) | {head} |', '|---|' + '---:|' * len(tasks)]
    for a, b in HEADLINE_PAIRS:
        cells = [pair.get((t, a, b)) for t in tasks]
        lines.append(f'| {a} - {b} | ' + ' | '.join(
            f'{p["mean"]:+.1f} [{p["ci95"][0]:+.1f}, {p["ci95"][1]:+.1f}] ({len(p["seeds"])})'
            + headline_mark(p) if p else '-' for p in cells) + ' |')
    if any(_state(p) == 'resolved, not after Holm' for p in summary['pairs'] if (p['a'], p['b']) in HEADLINE_PAIRS):
        lines += ['', f'† the 95% interval excludes 0, but the difference does not survive Holm\'s correction '
                  f'over all {len(summary["pairs"])} paired comparisons of the design (adjusted p >= 0.05).']
    return '\n'.join(lines) + '\n'


def plot(summary: dict, folder: Path) -> list[Path]:
    """Per task: every run as a point (method x seed, a line per seed) and every paired difference per seed with
    its 95% interval. One PNG per task."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task in dict.fromkeys(m['task'] for m in summary['methods']):
        rows = [m for m in summary['methods'] if m['task'] == task]
        pairs = [p for p in summary['pairs'] if p['task'] == task]
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.9 + 0.38 * max(len(rows), len(pairs), 4)),
                                          gridspec_kw=dict(width_ratios=[1, 1.15]))
        seeds = sorted({s for m in rows for s in m['seeds']})
        colours = {s: plt.cm.tab10(i % 10) for i, s in enumerate(seeds)}
        for y, m in enumerate(rows):
            for s, v in zip(m['seeds'], m['values']):
                left.plot(v, y + 0.08 * (seeds.index(s) - (len(seeds) - 1) / 2), 'o', ms=4, color=colours[s])
            left.plot([m['mean']] * 2, [y - 0.3, y + 0.3], '-', color='k', lw=1.5)
        for m, style in (('base', ':'), ('full', '--')):  # the bracket, for reading the adapters against it
            ref = next((r for r in rows if r['method'] == m), None)
            if ref:
                left.axvline(ref['mean'], color='grey', ls=style, lw=0.8)
        left.set_yticks(range(len(rows)), [f'{m["method"]} ({m["budget"]["backbone_trainable"]:,})' for m in rows])
        left.invert_yaxis()
        left.set_xlabel(f'{TASKS[task]["metric"]} (%): points = seeds, bar = mean; dotted Base, dashed Full')
        left.grid(axis='x', alpha=0.3)
        for s in seeds:
            left.plot([], [], 'o', color=colours[s], label=f'seed {s}')
        left.legend(fontsize=7, loc='lower left')
        for y, p in enumerate(pairs):
            low, high = p['ci95']
            colour = {'resolved': 'tab:green', 'resolved, not after Holm': 'yellowgreen',
                      'provisional': 'yellowgreen', 'not resolved': 'tab:grey'}[_state(p)]
            right.plot([low, high], [y, y], '-', color=colour, lw=3, alpha=0.6)
            for s, d in zip(p['seeds'], p['diffs']):
                right.plot(d, y, 'o', ms=4, color=colours.get(s, 'k'))
            right.plot(p['mean'], y, '|', color='k', ms=12)
        right.axvline(0, color='k', lw=0.8)
        right.set_yticks(range(len(pairs)), [f'{p["a"]} - {p["b"]}' for p in pairs])
        right.invert_yaxis()
        right.set_xlabel('paired difference, 95% t interval\n'
                         'green: excludes 0 after Holm; light: only before Holm or < 5 seeds')
        right.grid(axis='x', alpha=0.3)
        fig.suptitle(f'{task}: adaptation of the shipped source model to the shifted target')
        fig.tight_layout()
        path = folder / f'adaptation_{task}.png'
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def planned_runs(tasks, methods, seeds) -> list[tuple[str, str, int]]:
    """(task, method, seed) in running order: task by task, seed by seed, so that a partial grid holds whole seeds.
    ``zero_shot`` trains nothing and runs once (first seed); variants restricted to other tasks are left out."""
    return [(task, method, seed) for task in tasks for seed in seeds for method in methods
            if METHODS[method].runs_on(task) and not (method == 'zero_shot' and seed != seeds[0])]

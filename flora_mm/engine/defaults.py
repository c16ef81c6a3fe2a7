"""Each adapter method's shipped learning-rate multiplier, chosen from the tuned comparison's validation curves.

An OpenMMLab config's learning rate is set for full fine-tuning of its backbone; an adapter's ``lr_mult`` (else its
method's default, :attr:`flora_mm.adapters.methods.Method.lr_mult`) multiplies it for the parameters the adapter
trains. The validation grids of the tuned comparison (docs/tuned_comparison.md; one seed per point, validation
splits only) say which multiplier each method wants **relative to full fine-tuning's own best one**:

* on each task, a method's curve is read relative to Full's selected multiplier F (relative x1 = F; the grid is the
  same factor-4 grid for every method, so relative points are grid points);
* the *regret* of a relative multiplier on a task is the method's best validation value minus its value there
  (points of the task's metric; a failed or diverged run: infinite);
* the candidate is the relative multiplier with the least mean regret over the tasks, among those every task ran
  (ties: the one nearer x1, then the smaller);
* the default moves from 1 to the candidate only if that lowers the mean regret by at least :data:`MARGIN` points
  (single validation runs differ by up to 0.9 points between neighbouring grid points), or if relative x1 was not
  run on every task.

:func:`lr_mult_defaults` applies the rule to the committed run files; ``tests/test_engine/test_defaults.py`` checks
that every declared method's ``lr_mult`` is what the rule chose wherever every task has selected.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..docblocks import markdown_table
from .comparison import METHODS, _choice, _value, selected_lr_mult, validation_records
from .targets import TASKS

__all__ = ['MARGIN', 'REFERENCE_METHOD', 'SOURCES', 'defaults_table', 'lr_mult_defaults', 'relative_curve']

#: Each declared adapter method -> the study method whose curves choose its default (the plain form: not the MPC
#: variants of LoRA, not FLoRA's r3 = 7, which use LoRA's and FLoRA's).
SOURCES = {'BitFit': 'bitfit', 'LoRA': 'lora', 'DoRA': 'dora', 'FLoRA': 'flora', 'TriLoRA': 'trilora', 'IA3': 'ia3',
           'SSL': 'ssl', 'SSB': 'ssb'}
#: The method whose selection anchors the relative multipliers: what a config's learning rate is set for.
REFERENCE_METHOD = 'full'
#: Points of mean regret a multiplier other than relative x1 must save before the default moves to it.
MARGIN = 1.0


def relative_curve(out: Path, task: str, method: str) -> dict[float, float]:
    """``method``'s validation values (% of the task's metric; ``-inf`` for a failed run) by learning-rate multiplier
    relative to :data:`REFERENCE_METHOD`'s selection on ``task`` (raises while either selection is open)."""
    anchor = selected_lr_mult(out, task, REFERENCE_METHOD)
    selected_lr_mult(out, task, method)  # refuses an open grid: its curve may still grow
    scale = TASKS[task]['to_percent']
    return {run['lr_mult'] / anchor: scale * _value(run) for run in validation_records(out, task, method)}


def _rule(curves: dict[str, dict[float, float]]) -> dict:
    """The rule of the module docstring on one method's relative curves (task -> multiplier -> value)."""
    best = {task: max(curve.values()) for task, curve in curves.items()}
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    regret = {m: sum(best[t] - curves[t][m] for t in curves) / len(curves) for m in common}
    candidate = min(common, key=lambda m: (regret[m], abs(math.log(m)), m))
    at_one = regret.get(1.0)
    moves = at_one is None or at_one - regret[candidate] >= MARGIN
    return dict(regret=regret, candidate=candidate, default=candidate if moves else 1.0)


def lr_mult_defaults(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> list[dict]:
    """One row per :data:`SOURCES` method: its relative selection per task, the mean regret by relative multiplier,
    the candidate and the default the rule gives (``default`` None and ``pending`` the open tasks while any task's
    grid, or Full's, has not selected)."""
    rows = []
    for name, method in SOURCES.items():
        if method not in METHODS:
            raise KeyError(f'{name}: its source {method!r} is not a method of the tuned comparison')
        curves, relative, pending = {}, {}, []
        for task in tasks:
            try:
                curves[task] = relative_curve(out, task, method)
            except RuntimeError:  # an open selection (the method's or Full's)
                pending.append(task)
                continue
            relative[task] = selected_lr_mult(out, task, method) / selected_lr_mult(out, task, REFERENCE_METHOD)
        row = dict(method=name, source=method, pending=pending, default=None, candidate=None, regret={},
                   relative=relative)
        if not pending:
            row.update(_rule(curves))
        rows.append(row)
    return rows


def _mult(value: float) -> str:
    return f'x{value:g}' if value >= 1 else f'x1/{1 / value:g}'


def defaults_table(out: Path, tasks: tuple[str, ...] = tuple(TASKS)) -> str:
    """Markdown: the rule's inputs and result per method (multipliers relative to Full's selection per task)."""
    rows = []
    for row in lr_mult_defaults(out, tasks):
        selected = [_mult(row['relative'][t]) if t in row['relative'] else 'open' for t in tasks]
        if row['pending']:
            rows.append([f'`{row["method"]}`', *selected, '-', '-', f'open ({", ".join(row["pending"])})'])
            continue
        regret, cand = row['regret'], row['candidate']
        rows.append([f'`{row["method"]}`', *selected, f'{regret[1.0]:.1f}' if 1.0 in regret else 'not run',
                     f'{_mult(cand)} ({regret[cand]:.1f})', f'**{_mult(row["default"])}**'])
    anchors = ', '.join(f'{t} {_choice(out, t, REFERENCE_METHOD)}' for t in tasks)
    head = (f'Multipliers relative to Full\'s selected one on each task ({anchors} of the config\'s '
            f'learning rate); regret: best validation value minus the value there, points, mean over '
            f'{len(tasks)} tasks; the default moves off x1 when that saves >= {MARGIN:g} point.\n\n')
    return head + '\n'.join(markdown_table(['method', *(f'selected, {t}' for t in tasks), 'mean regret at x1',
                                             'least mean regret', 'default lr_mult'], rows))

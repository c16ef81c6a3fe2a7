"""``python -m flora_mm.weights``: the shipped weights as a markdown table (docs/checkpoints.md), from
:data:`flora_mm.weights.WEIGHTS` and the ``.json`` record beside each file."""
import json

from . import WEIGHTS


def _source_metrics(name: str) -> str:
    record = WEIGHTS[name].path.with_suffix('.json')
    if not record.exists():
        return ''
    metrics = json.loads(record.read_text()).get('source_val', {})
    return ', '.join(f'{k} {100 * v if v <= 1 else v:.1f}' for k, v in metrics.items())


def table() -> str:
    lines = ['| name | extends | source-domain validation (%) | size | SHA-256 | regenerate (from the repository root) |',
             '|---|---|---|---:|---|---|']
    for name, entry in WEIGHTS.items():
        size = entry.path.stat().st_size / 2**20 if entry.path.exists() else float('nan')
        lines.append(f'| `{name}` | {f"`{entry.base}`" if entry.base else "-"} | {_source_metrics(name)} | '
                     f'{size:.1f} MiB | `{entry.sha256}` | `{entry.command}` ({entry.minutes:g} min on 2 cores) |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(table())

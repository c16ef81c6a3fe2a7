"""The benchmark's ratios and reports: :data:`RATIOS`, the arithmetic floors, the JSON / markdown / PNG of one run
and the summary row of several (``tools/benchmark.py --render``)."""
from __future__ import annotations

import json
import os
import os.path as osp

from .harness import FLOORS, Step, flop_count, is_vit

__all__ = ['RATIOS', 'SUMMARY_RATIOS', 'compute_ratios', 'summary', 'write']

#: ``name: (numerator method, denominator method, measure)`` of the reported ratios.
RATIOS = dict(
    flora_vs_lora_time=('flora', 'lora', 'step_ms'), flora_vs_lora_mem=('flora', 'lora', 'peak_mb'),
    flora_vs_bound_time=('flora', 'input_grad_bound', 'step_ms'),
    flora_vs_bound_mem=('flora', 'input_grad_bound', 'peak_mb'), dora_vs_lora_time=('dora', 'lora', 'step_ms'),
    full_vs_bound_time=('full', 'input_grad_bound', 'step_ms'),
    merged_vs_base_infer_time=('infer_flora_merged', 'infer_base', 'step_ms'),
    **{f'{m}_vs_bound_time': (m, 'input_grad_bound', 'step_ms') for m in FLOORS},
    flora_vs_lora_flop=('flora', 'lora', 'gflop'), flora_vs_bound_flop=('flora', 'input_grad_bound', 'gflop'),
    flora_at_lora_rank_vs_lora_time=('flora_at_lora_rank', 'lora', 'step_ms'),
    flora_cp_vs_bound_time=('flora_cp', 'input_grad_bound', 'step_ms'),
    flora_cp_vs_bound_mem=('flora_cp', 'input_grad_bound', 'peak_mb'))


def compute_ratios(r: dict, gemm: float, args) -> dict:
    """The ratios of :data:`RATIOS` whose two methods were run, and the arithmetic floors."""
    ratios = {name: r[a][key] / max(r[b][key], 1e-9) for name, (a, b, key) in RATIOS.items() if a in r and b in r}

    # Floors from arithmetic at the device's peak matmul speed. LoRA's budget buys FLoRA a higher rank than LoRA's;
    # the multiply-adds that rank adds (FLoRA minus FLoRA at LoRA's rank) cost at least this much time on these
    # routes, however fast their kernels -- the least flora_vs_lora_time reachable unless FLoRA at LoRA's rank
    # beats LoRA. Against the bound: every FLoRA multiply-add beyond the bound's.
    def floor(extra_gflop: float, over: str) -> float:
        return 1 + extra_gflop / gemm * 1000 / r[over]['step_ms']

    if 'flora' in r and 'lora' in r:
        at_lora_rank = (r['flora_at_lora_rank']['gflop'] if 'flora_at_lora_rank' in r else
                        flop_count(Step('flora_at_lora_rank', args)) / 1e9)
        ratios['flora_vs_lora_time_floor'] = floor(r['flora']['gflop'] - at_lora_rank, 'lora')
    if 'flora' in r and 'input_grad_bound' in r:
        ratios['flora_vs_bound_time_floor'] = floor(r['flora']['gflop'] - r['input_grad_bound']['gflop'],
                                                    'input_grad_bound')
    return ratios


#: Columns of :func:`summary`: step times, the headline ratios and the routes ``auto`` chose.
SUMMARY_RATIOS = ('flora_vs_lora_time', 'flora_vs_bound_time', 'dora_vs_lora_time', 'merged_vs_base_infer_time')


def summary(reports: dict) -> str:
    """One markdown row per saved report (path -> report): setup, LoRA / FLoRA step times and routes, ratios."""
    def ms(r, m):
        return f"{r['results'][m]['step_ms']:.1f}" if m in r['results'] else '-'

    def routes(r, m):
        return ', '.join(f'{k} {n}' for k, n in r['results'].get(m, {}).get('routes', {}).items()) or '-'

    lines = ['| report | arch, input | routes | bound ms | LoRA ms | FLoRA ms | ' + ' | '.join(SUMMARY_RATIOS) + ' |',
             '|---' * (6 + len(SUMMARY_RATIOS)) + '|']
    for path, r in reports.items():
        s = r['setup']
        pinned = s.get('route', s.get('impl', 'auto'))  # 'impl': reports written before the option's rename
        policy = pinned if pinned != 'auto' else f"auto ({s.get('route_policy', '?')})"
        ratios = ' | '.join(f"{r['ratios'][k]:.3f}" if k in r['ratios'] else '-' for k in SUMMARY_RATIOS)
        lines.append(f"| {osp.basename(path)} | {s['arch']} {s['batch']}x{s['img']} {s.get('amp', 'none')} | {policy}: "
                     f"LoRA {routes(r, 'lora')}; FLoRA {routes(r, 'flora')} | {ms(r, 'input_grad_bound')} | "
                     f"{ms(r, 'lora')} | {ms(r, 'flora')} | {ratios} |")
    return '\n'.join(lines)


def write(report: dict, path: str, echo: bool = True) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    base = osp.splitext(path)[0]
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
    s = report['setup']
    name = s['arch'] if is_vit(s['arch']) else f"ConvNeXt-V2-{s['arch']}"
    amp = s.get('amp', 'none')
    lines = [f"{name}, {s['img']} px, batch {s['batch']}, {s['device_name']} ({s['threads']} threads), medians of "
             f"{s['reps']} {'sequential' if s.get('sequential') else 'interleaved'} reps; autocast {amp}, base "
             f"{s.get('base_dtype', 'fp32')}{', with_cp' if s.get('with_cp') else ''}; LoRA/DoRA r={s['lora_rank']}, "
             f"FLoRA r={s['flora_rank']} r3={s['kernel_rank']}; peak {amp if amp != 'none' else 'fp32'} matmul "
             f"{s['gemm_gflops']:.0f} GFLOP/s", '',
             '| method | step (ms) | peak (MB) | saved for backward (MB) | GFLOP | adapter params | routes |',
             '|---|---|---|---|---|---|---|']
    for m, v in report['results'].items():
        routes = ', '.join(f'{k} {n}' for k, n in v.get('routes', {}).items()) or '-'
        lines.append(f"| {m} | {v['step_ms']:.1f} | {v['peak_mb']:.1f} | {v['saved_mb']:.1f} | {v['gflop']:.2f} | "
                     f"{v['adapter_params']:,} | {routes} |")
    lines += ['', '| ratio | value |', '|---|---|']
    lines += [f'| {k} | {v:.3f} |' for k, v in report['ratios'].items()]
    lines.append(f"| merged_max_abs_diff | {report['merged_max_abs_diff']:.2e} |")
    with open(base + '.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    names = list(report['results'])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], 'step_ms', 'step time (ms)'), (axes[1], 'peak_mb', 'peak memory (MB)')):
        ax.barh(names, [report['results'][n][key] for n in names], color='tab:blue')
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.suptitle(lines[0], fontsize=8)
    fig.tight_layout()
    fig.savefig(base + '.png', dpi=110)
    plt.close(fig)
    if echo:
        print('\n'.join(lines))
        print(f'\nwrote {path}, {base}.md, {base}.png')

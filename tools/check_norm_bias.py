#!/usr/bin/env python
"""The frozen-weight / trainable-bias normalisation failure (BitFit on CUDA) and flora_mm's fix, measured.

For each size, runs forward + backward of

* ``plain``: ``F.layer_norm(x, (C,), w, b)`` / ``F.group_norm(x, G, w, b)`` with ``w`` frozen and ``b`` trainable,
  the call that fails on CUDA once a layer norm normalises more than 65,536 rows (torch 2.11);
* ``bitfit``: the same norm module after ``inject_adapters(..., dict(type='BitFit'))`` (flora_mm's split form),

and compares the bias gradient of each with a float64 recomputation on the CPU (``sum`` of the output gradient
over the broadcast dimensions). Prints one line per case and writes JSON.

    python tools/check_norm_bias.py --device cuda --json work_dirs/gpu_check/norm_bias.json
"""
import argparse
import json
import os
import os.path as osp

import torch
from torch import nn

from flora_mm.adapters import inject_adapters

#: kind: (norm factory, input shape for a number of normalised rows): layer norms over C = 192 (ConvNeXt-V2-L's
#: first stage), group norms as mm's heads use them (32 groups of 256 channels).
CASES = {
    'layer_norm': (lambda: nn.LayerNorm(192), lambda rows: (rows, 192)),
    'group_norm': (lambda: nn.GroupNorm(32, 256), lambda rows: (max(rows // 4096, 1), 256, 64, 64)),
}


def run(kind: str, rows: int, device: str, route: str) -> dict:
    make_norm, shape = CASES[kind]
    torch.manual_seed(0)
    norm = make_norm().to(device)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(shape(rows), device=device)
    if route == 'bitfit':
        inject_adapters(nn.Sequential(norm), dict(type='BitFit', targets=['all']))
    else:
        norm.weight.requires_grad_(False)
    grad = torch.randn_like(x)
    try:
        norm(x).backward(grad)
        if device == 'cuda':
            torch.cuda.synchronize()
    except RuntimeError as err:
        return dict(ok=False, error=str(err).splitlines()[0][:200])
    dims = [d for d in range(grad.dim()) if d != (grad.dim() - 1 if kind == 'layer_norm' else 1)]
    expected = grad.double().sum(dim=dims).cpu()
    err = (norm.bias.grad.double().cpu() - expected).abs().max().item() / expected.abs().max().item()
    return dict(ok=err < 1e-4, bias_grad_rel_err=err)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--rows', type=int, nargs='+', default=[512, 65536, 131072, 243200])
    parser.add_argument('--json', default='work_dirs/gpu_check/norm_bias.json')
    args = parser.parse_args()
    results = []
    for kind in CASES:
        for rows in args.rows:
            for route in ('plain', 'bitfit'):
                res = dict(kind=kind, rows=rows, route=route, **run(kind, rows, args.device, route))
                results.append(res)
                print(json.dumps(res), flush=True)
    os.makedirs(osp.dirname(args.json) or '.', exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(dict(device=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu',
                       torch=torch.__version__, results=results), f, indent=1)
    failed = [r for r in results if r['route'] == 'bitfit' and not r['ok']]
    raise SystemExit(1 if failed else 0)


if __name__ == '__main__':
    main()

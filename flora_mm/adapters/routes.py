"""How ``route='auto'`` chooses an adapted layer's route, at the layer's first training forward (when the device it
trains on is known).

Policies (:func:`set_policy`, else the environment variable ``FLORA_MM_ROUTE_POLICY``):

* ``cost_model`` (default) -- the rule of the device type the layer trains on (``AdapterLayer.rule_route``: on a
  CPU the width / rank rule fitted on a 2-core CPU, on CUDA ``merged``, fitted on the H200 runs in
  ``results/gpu/``). Deterministic: two runs of one config, and every DDP rank, take the same routes, so same-seed
  runs are bit-identical (measured choices made same-seed repeats differ by up to 0.9 mAP: docs/reproduction.md,
  "Noise and determinism").
* ``measure`` -- opt in, like ``cudnn.benchmark``: at a layer's first training forward, time forward + backward of
  every exact route (``merged``, ``branch``, ``two_pass``) on that input and keep the fastest (:func:`measure`:
  three interleaved rounds of ``FLORA_MM_ROUTE_REPS``, default 3, back-to-back calls after one warm-up). The
  choice is cached per signature (the layer's operator and shapes, the input's shape / dtype / layout, autocast
  dtype, device name), so repeated blocks are measured once. With ``FLORA_MM_ROUTE_CACHE=DIR`` choices are also
  kept on disk, one JSON file per device name and torch version, so later runs on the same machine make the same
  choices without measuring. Under ``torch.distributed`` every rank takes rank 0's measured choice (one broadcast
  per signature), so DDP / FSDP ranks compute every layer the same way. Timing noise can make two runs choose
  differently; the routes compute the same function (to float rounding), so only bit-reproducibility is affected.

Pinning ``route='merged' | 'branch' | 'two_pass'`` in the adapter config bypasses both.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import statistics
import tempfile
import time
from typing import Callable

import torch

__all__ = ['POLICIES', 'ROUTES', 'choose', 'clear_cache', 'device_name', 'policy', 'set_policy']

ROUTES = ('merged', 'branch', 'two_pass')
POLICIES = ('measure', 'cost_model')

_policy: str | None = None
_cache: dict[str, str] = {}


def policy() -> str:
    """The route policy in force: :func:`set_policy`'s, else ``$FLORA_MM_ROUTE_POLICY``, else ``cost_model``."""
    value = _policy or os.environ.get('FLORA_MM_ROUTE_POLICY') or 'cost_model'
    if value not in POLICIES:
        raise ValueError(f'unknown route policy {value!r} (FLORA_MM_ROUTE_POLICY); choose from {POLICIES}')
    return value


def set_policy(value: str | None) -> None:
    """Set the policy for the routes chosen from now on, i.e. of layers still at ``route='auto'`` (``None``: back to
    the environment / default)."""
    if value is not None and value not in POLICIES:
        raise ValueError(f'unknown route policy {value!r}; choose from {POLICIES}')
    global _policy
    _policy = value


def clear_cache() -> None:
    """Forget the in-process route choices (the disk cache is left alone)."""
    _cache.clear()


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'cuda:{torch.cuda.get_device_name(device)}'
    return f'{device.type}:{torch.get_num_threads()}threads'


def _sync(device_type: str) -> None:
    if device_type == 'cuda':
        torch.cuda.synchronize()


def _disk_file(device_type: str) -> str | None:
    """The disk cache of the device the layer runs on (not whichever device the machine has)."""
    folder = os.environ.get('FLORA_MM_ROUTE_CACHE')
    if not folder:
        return None
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', f'{device_name(torch.device(device_type))}_torch-{torch.__version__}')
    return osp.join(folder, f'routes_{name}.json')


def _read_disk(path: str | None) -> dict[str, str]:
    if path is None or not osp.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # an unreadable cache is only a cache: measure again


def _write_disk(path: str | None, key: str, route: str) -> None:
    if path is None:
        return
    os.makedirs(osp.dirname(path), exist_ok=True)
    entries = {**_read_disk(path), key: route}
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.tmp')
    with os.fdopen(fd, 'w') as f:
        json.dump(entries, f, indent=0, sort_keys=True)
    os.replace(tmp, path)  # atomic: concurrent processes never see a half-written file


def measure(candidates: tuple[str, ...], make_step: Callable[[str], Callable[[], None]], device_type: str,
            reps: int | None = None, rounds: int = 3) -> dict[str, float]:
    """Seconds per ``make_step(route)()`` for each candidate: the median over ``rounds`` interleaved rounds, each
    timing ``reps`` back-to-back calls with one synchronisation at either end (after one warm-up call of each).

    Back-to-back, as in a training step: on a GPU the host queues the next kernels while the device runs the last
    ones, so a route is charged for its device time, or its launch time where that is longer -- not for both, as a
    synchronised single call would (that favours few large kernels over many small ones).
    """
    reps = reps or int(os.environ.get('FLORA_MM_ROUTE_REPS', 3))
    steps = {route: make_step(route) for route in candidates}
    times: dict[str, list[float]] = {route: [] for route in candidates}
    # the timing runs must not move any random stream (adapter dropout draws from it)
    devices = [torch.cuda.current_device()] if device_type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        for step in steps.values():
            step()
        for _ in range(rounds):
            for route, step in steps.items():
                _sync(device_type)
                start = time.perf_counter()
                for _ in range(reps):
                    step()
                _sync(device_type)
                times[route].append((time.perf_counter() - start) / reps)
    return {route: statistics.median(t) for route, t in times.items()}


def choose(key: tuple, candidates: tuple[str, ...], make_step: Callable[[str], Callable[[], None]],
           device_type: str) -> str:
    """The cached route for ``key``, or the fastest of ``candidates`` measured now (and cached)."""
    if len(candidates) == 1:
        return candidates[0]
    text = repr(key)
    route = _cache.get(text)
    if route is None:
        path = _disk_file(device_type)
        route = _read_disk(path).get(text)
        if route not in candidates:
            timed = measure(candidates, make_step, device_type)
            route = min(timed, key=timed.get)
            _write_disk(path, text, route)
        route = _agree(route)
        _cache[text] = route
    return route


def _agree(route: str) -> str:
    """Under ``torch.distributed`` (DDP, FSDP), every rank takes rank 0's choice: each rank measures on its own
    device and timing noise could make them differ, and ranks computing the same layer by different routes would
    differ by float rounding. All ranks reach a layer's first training forward together, so this collective is
    entered by all of them in the same order."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return route
    chosen = [route]
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]

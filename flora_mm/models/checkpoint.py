"""Reading pretrained checkpoints and loading them into a backbone's base parameters, strictly, whatever adapters
it carries.

* :func:`read_checkpoint` reads a ``.pth`` / ``.bin`` file (anything mmengine's loader reads), a ``.safetensors``
  file, or a *sharded* Hugging Face checkpoint: its ``*.index.json`` or the folder holding it (shards read one at
  a time into one dict, every key of the index checked against the shards).
* :func:`unwrap_state_dict` takes the backbone's tensors out of whatever holds them: training containers
  (``{'model': ...}``, ``state_dict``, ``module``) and prefixes (``module.`` of DDP, ``backbone.`` of a trained mm
  detector / segmentor, ``vision_model.`` of an InternVL chat model). Keys without the prefix (neck, heads,
  language model) are dropped and the dropped groups named in the log.
* :func:`load_base_weights` loads a backbone's filtered state strictly (missing / unexpected / shape errors).
* ``flora_mm://NAME`` (the weights shipped in :mod:`flora_mm.weights`, SHA-256 checked) is registered with
  mmengine's ``CheckpointLoader``, so it works in any ``init_cfg`` / ``load_from``, for any backbone.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlparse

from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from .. import weights
from ..adapters import StateDictMismatchError, adapted_layers, state_dict_mismatches

__all__ = ['BASE_METADATA_KEY', 'CONTAINER_KEYS', 'PretrainedMixin', 'WRAPPER_PREFIXES', 'base_identity', 'checkpoint_file',
           'load_base_weights', 'pretrained_init_cfgs', 'read_checkpoint', 'unwrap_state_dict']

#: Keys under which training scripts store the model's state dict (mmengine, the official repos, DeepSpeed).
CONTAINER_KEYS = ('state_dict', 'model', 'module')
#: Key prefixes that wrap a backbone's own names, stripped in this order: DDP, mm detectors / segmentors,
#: InternVL chat models.
WRAPPER_PREFIXES = ('module.', 'backbone.', 'vision_model.')
_INDEX_NAMES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')
#: Key of an adapter's base identities in its module's entry of ``state_dict._metadata`` (adapter-only checkpoints).
BASE_METADATA_KEY = 'flora_mm_base'


@CheckpointLoader.register_scheme(prefixes=weights.SCHEME)
def load_from_flora_mm(filename: str, map_location=None) -> dict:
    """mmengine loader for ``flora_mm://NAME``: the shipped state dict, after its SHA-256 check (a task model with
    its base backbone's tensors under ``backbone.``)."""
    return weights.load(filename, map_location)


def _hub_file(url: str) -> str:
    """Where mmengine's ``load_from_http`` (``torch.hub.load_state_dict_from_url``) keeps a downloaded URL."""
    import torch.hub
    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def pretrained_init_cfgs(module: nn.Module) -> list[Mapping]:
    """The ``dict(type='Pretrained', checkpoint=...)`` entries of ``module``'s own ``init_cfg`` (a dict or a list)."""
    cfgs = getattr(module, 'init_cfg', None)
    return [c for c in (cfgs if isinstance(cfgs, (list, tuple)) else [cfgs])
            if isinstance(c, Mapping) and c.get('type') == 'Pretrained' and c.get('checkpoint')]


def checkpoint_file(checkpoint: str) -> str | None:
    """The local file (or folder of a sharded checkpoint) that loading ``checkpoint`` reads: the path itself,
    the verified file of ``flora_mm://NAME``, the hub-cache copy of an ``http(s)://`` or ``open-mmlab://`` URL
    once downloaded; ``None`` where it cannot be known (not downloaded yet, other remote schemes)."""
    checkpoint = str(checkpoint)
    if checkpoint.startswith(weights.SCHEME):
        return str(weights.resolve(checkpoint))
    for prefix in ('open-mmlab://', 'openmmlab://'):
        if checkpoint.startswith(prefix):
            from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models
            name = checkpoint[len(prefix):]
            name = get_deprecated_model_names().get(name, name)
            checkpoint = get_external_models().get(name, '')
    if checkpoint.startswith(('http://', 'https://')):
        checkpoint = _hub_file(checkpoint)
    elif '://' in checkpoint:
        return None
    path = osp.expanduser(checkpoint)
    return path if osp.exists(path) else None


def base_identity(checkpoint: str) -> str | None:
    """The identity of a pretrained base: the SHA-256 of the file that loading ``checkpoint`` reads
    (:func:`checkpoint_file`; for a folder, of its files' names and hashes; for a shipped task model, of its file
    and its base's), or ``None`` where that file is not known (see :func:`checkpoint_file`)."""
    path = checkpoint_file(checkpoint)
    if path is None:
        return None
    if str(checkpoint).startswith(weights.SCHEME):
        entry = weights.WEIGHTS[str(checkpoint)[len(weights.SCHEME):]]
        if entry.base is not None:  # a task model: its file and its base's file
            return weights.sha256_text(f'{weights.sha256(path)}+{base_identity(weights.SCHEME + entry.base)}')
    if osp.isdir(path):
        files = sorted(f for f in os.listdir(path) if osp.isfile(osp.join(path, f)))
        return weights.sha256_text('\n'.join(f'{f} {weights.sha256(osp.join(path, f))}' for f in files))
    return weights.sha256(path)


def _read_file(path: str) -> Mapping[str, Tensor]:
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    return CheckpointLoader.load_checkpoint(path, map_location='cpu')


def _read_sharded(index_path: str) -> dict[str, Tensor]:
    """The tensors of a sharded Hugging Face checkpoint, one shard in memory at a time besides the result."""
    with open(index_path) as f:
        weight_map: dict[str, str] = json.load(f)['weight_map']
    folder = osp.dirname(index_path)
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = _read_file(osp.join(folder, shard))
        expected = {k for k, v in weight_map.items() if v == shard}
        absent, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        twice = sorted(set(tensors) & set(state))
        if absent or extra or twice:
            raise StateDictMismatchError(f'shard {shard} does not match {osp.basename(index_path)}: keys the index puts there but '
                           f'missing {absent[:10]} ({len(absent)}), keys the index does not list there {extra[:10]} '
                           f'({len(extra)}), keys already read from another shard {twice[:10]} ({len(twice)})')
        state.update(tensors)
        del tensors
    return state


def read_checkpoint(checkpoint: str | Mapping[str, Tensor]) -> tuple[Mapping[str, Tensor], str]:
    """``(state, source name)`` from a path -- a file (``.safetensors``, or anything mmengine's loader reads: local
    files, URLs...), a sharded checkpoint's ``*.index.json``, or a folder holding one index or one
    ``model.safetensors`` / ``pytorch_model.bin`` -- or an in-memory state dict."""
    if not isinstance(checkpoint, str):
        return checkpoint, 'state dict'
    if osp.isdir(checkpoint):
        found = [osp.join(checkpoint, n) for n in (*_INDEX_NAMES, 'model.safetensors', 'pytorch_model.bin')
                 if osp.exists(osp.join(checkpoint, n))]
        if not found:
            raise FileNotFoundError(f'{checkpoint} holds no {" / ".join(_INDEX_NAMES)}, model.safetensors or '
                                    f'pytorch_model.bin')
        return read_checkpoint(found[0])[0], checkpoint
    if checkpoint.endswith('.index.json'):
        return _read_sharded(checkpoint), checkpoint
    return _read_file(checkpoint), checkpoint


def unwrap_state_dict(state_dict: Mapping[str, Tensor], prefixes: Sequence[str] = WRAPPER_PREFIXES,
                      what: str = 'backbone') -> dict[str, Tensor]:
    """The backbone's tensors of a checkpoint: containers (:data:`CONTAINER_KEYS`) opened, then for each of
    ``prefixes`` that some key carries, the keys with it kept (prefix stripped) and the others dropped. Dropped key
    groups (first name component, with counts) are logged. Pure apart from that log line."""
    for key in CONTAINER_KEYS:
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    state = dict(state_dict)
    dropped: Counter = Counter()
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            dropped.update(k.split('.', 1)[0] for k in state if not k.startswith(prefix))
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if dropped:
        groups = ', '.join(f'{name}.* ({n})' for name, n in sorted(dropped.items()))
        print_log(f'checkpoint: kept the {what} keys, dropped {sum(dropped.values())} others: {groups}',
                  logger='current')
    return state


def load_base_weights(model: nn.Module, checkpoint: str | Mapping[str, Tensor],
                      filter_fn: Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]],
                      new_layers: Sequence[str] = ()) -> None:
    """Load ``filter_fn(checkpoint, model)`` into ``model``'s base parameters.

    Every base parameter must be present -- except those of the ``new_layers`` (submodules that are not part of
    the pretrained network) and the adapters' own parameters -- and every checkpoint tensor must have a place
    with the same shape. Otherwise ``KeyError`` names the missing keys, unexpected keys and shape mismatches,
    before anything is loaded.
    """
    state, source = read_checkpoint(checkpoint)
    state = filter_fn(state, model)
    own = model.state_dict()
    skip = tuple(f'{n}.' for n in new_layers)
    adapter_keys = {f'{n}.{k}' for n, layer in adapted_layers(model) for k in layer.adapter_names}
    base_keys = {k for k in own if not k.startswith(skip)} - adapter_keys
    problems = state_dict_mismatches(own, state, required=base_keys)
    if problems:
        raise StateDictMismatchError(f'checkpoint {source} does not fit {model.extra_repr() or type(model).__name__}:\n  '
                       + '\n  '.join(problems))
    model.load_state_dict(state, strict=False)
    print_log(f'{type(model).__name__}: loaded {len(state)} tensors from {source}', logger='current')


class PretrainedMixin:
    """``init_weights()`` / ``load_pretrained()`` for an mmengine ``BaseModule`` backbone whose
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` goes through its own checkpoint filter.

    The class sets ``checkpoint_filter`` (a pure ``fn(state_dict, model)``); instances set ``new_layer_names``
    (submodules that are not part of the pretrained network). Other init configs go to mmengine.
    """

    checkpoint_filter: Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]
    new_layer_names: Sequence[str] = ()

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def load_pretrained(self, checkpoint: str | Mapping[str, Tensor]) -> None:
        """Load the base weights from a path (``.pth`` / ``.safetensors`` / URL) or a state dict; raises
        ``KeyError`` naming missing / unexpected keys and shape mismatches if the checkpoint does not fit."""
        load_base_weights(self, checkpoint, type(self).checkpoint_filter, self.new_layer_names)

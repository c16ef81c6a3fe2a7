"""Loading pretrained weights into a backbone's base parameters, strictly, whatever adapters it carries."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from ..adapters import adapted_layers

__all__ = ['PretrainedMixin', 'read_checkpoint', 'load_base_weights']


def read_checkpoint(checkpoint: str | Mapping[str, Tensor]) -> tuple[Mapping[str, Tensor], str]:
    """``(state, source name)`` from a path (``.safetensors``, or anything mmengine's loader reads: local
    files, URLs...) or an in-memory state dict."""
    if not isinstance(checkpoint, str):
        return checkpoint, 'state dict'
    if checkpoint.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(checkpoint, device='cpu'), checkpoint
    return CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'), checkpoint


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
    missing = sorted(base_keys - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}' for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise KeyError(f'checkpoint {source} does not fit {model.extra_repr() or type(model).__name__}: '
                       f'missing {missing[:10]}{" ..." if len(missing) > 10 else ""} ({len(missing)}), '
                       f'unexpected {unexpected[:10]} ({len(unexpected)}), shape mismatches {shapes[:10]}')
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

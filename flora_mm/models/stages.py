"""``frozen_stages`` for flora_mm's backbones: the leading stages stay frozen and in eval mode (plain PyTorch)."""
from __future__ import annotations

from torch import nn

__all__ = ['FrozenStagesMixin', 'arch_settings', 'check_out_indices']


def arch_settings(model: str, arch, table: dict):
    """``table[arch]`` for a named architecture, or ``arch`` itself when it is a dict of settings."""
    if not isinstance(arch, str):
        return arch
    if arch not in table:
        raise ValueError(f'unknown {model} arch {arch!r}; choose from {list(table)} or a dict')
    return table[arch]


def check_out_indices(out_indices, count: int, what: str) -> tuple[int, ...]:
    """``out_indices`` as a tuple, after checking each lies in ``[0, count)``."""
    bad = [i for i in out_indices if not 0 <= i < count]
    if bad:
        raise ValueError(f'out_indices {bad} out of range for {what}')
    return tuple(out_indices)


class FrozenStagesMixin:
    """Freezes what :meth:`_frozen_modules` / :meth:`_frozen_parameters` name (the backbone's leading stages, per
    its ``frozen_stages``) and keeps those modules in eval mode whatever ``train()`` is called with, so drop path
    and norms behave as at inference there. Frozen stages then get no adapter (``attach_adapter`` respects them)."""

    def _frozen_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def _frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen with the stages that belong to no frozen module (e.g. a ViT's position embeddings)."""
        return []

    def _freeze_stages(self) -> None:
        for param in self._frozen_parameters():
            param.requires_grad_(False)
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

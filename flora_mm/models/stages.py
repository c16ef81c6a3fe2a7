"""``frozen_stages`` for flora_mm's backbones: the leading stages stay frozen and in eval mode (plain PyTorch)."""
from __future__ import annotations

from torch import nn

__all__ = ['FrozenStagesMixin']


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

"""OpenMMLab backbones (registered in mmengine's MODELS, visible from mmdet / mmseg / mmrotate scopes) and the
``backbone.adapter=`` build hook for any registered backbone."""
from .builder import attach_adapter, install_adapter_build_hook
from .convnextv2 import ConvNeXtV2
from .internvit import InternViT

__all__ = ['ConvNeXtV2', 'InternViT', 'attach_adapter', 'install_adapter_build_hook']

from .. import mm as _mm  # noqa: E402  (flora_mm's OpenMMLab parts need the integration enabled)

_mm.enable()

"""Synthetic demo datasets written in the real COCO / DOTA / ADE20K formats."""
from .synthetic import (ADE_CLASSES, COCO_CLASSES, DOTA_CLASSES, SOURCE_SHAPES, ensure_dataset, make_ade20k,
                        make_coco, make_dota, source_scene)

__all__ = ['ADE_CLASSES', 'COCO_CLASSES', 'DOTA_CLASSES', 'SOURCE_SHAPES', 'ensure_dataset', 'make_ade20k',
           'make_coco', 'make_dota', 'source_scene']

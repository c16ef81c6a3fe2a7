#!/usr/bin/env python
"""The demo: FLoRA-adapted ConvNeXt-V2 Mask R-CNN on the synthetic COCO-format data, on CPU.

The base model is our pretrained ConvNeXt-V2-atto shipped with the package (``flora_mm://convnextv2_atto_source``,
see ``flora_mm/weights``). Generates ``data/demo_coco`` if absent, then trains and validates two detectors through
``tools/train.py`` (mmdet's runner, with its progress log): the frozen base (only neck and heads train) and FLoRA,
and prints both runs' COCO bbox and segm mAP.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = 'configs/demo/flora_convnext-atto_mask-rcnn_demo-coco.py'


def last_metrics(work_dir: Path) -> dict:
    """The last validation record of the newest run in ``work_dir``."""
    from flora_mm.engine.logs import read_scalars
    val = [r for r in read_scalars(work_dir, latest_only=True) if 'coco/bbox_mAP' in r]
    if not val:
        raise RuntimeError(f'the newest run in {work_dir} has no validation result')
    return val[-1]


def train(work_dir: str, epochs: int, options: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), CONFIG, '--work-dir', work_dir, '--cfg-options',
           f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
           f'default_hooks.checkpoint.interval={epochs}', *options]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return last_metrics(ROOT / work_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=32)
    parser.add_argument('--skip-base', action='store_true', help='train only FLoRA, not the frozen-backbone baseline')
    args = parser.parse_args()
    start = time.time()
    data_root = ROOT / 'data' / 'demo_coco'
    if not (data_root / 'annotations' / 'instances_val2017.json').exists():
        from flora_mm.data import make_coco
        make_coco(data_root, num_train=args.num_train, num_val=args.num_val, seed=0)
        print(f'generated demo data in {data_root}')
    runs = {}
    if not args.skip_base:  # the paper's "Base": backbone frozen, no adapter; neck and heads train
        runs['Base (frozen backbone)'] = train(f'{args.work_dir}/base', args.epochs,
                                               ['model.backbone.adapter=None', 'model.backbone.frozen_stages=4'])
    runs['FLoRA'] = train(f'{args.work_dir}/flora', args.epochs, [])
    minutes = (time.time() - start) / 60
    print('\n' + '=' * 78)
    print(f'Mask R-CNN on our pretrained ConvNeXt-V2-atto (shipped), demo COCO data, {args.epochs} epochs per run, '
          f'{minutes:.1f} min in all')
    for name, metrics in runs.items():
        print(f'  {name:24s}' + '  '.join(f'{kind} mAP {metrics[f"coco/{kind}_mAP"]:.3f} '
                                          f'(@50 {metrics[f"coco/{kind}_mAP_50"]:.3f})' for kind in ('bbox', 'segm')))
    print('=' * 78)


if __name__ == '__main__':
    main()

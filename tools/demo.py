#!/usr/bin/env python
"""The demo: FLoRA-adapted ConvNeXt-V2 Mask R-CNN on the synthetic COCO-format data, on CPU.

Generates ``data/demo_coco`` if absent, trains and validates through ``tools/train.py`` (mmdet's runner, with its
progress log), then prints the COCO bbox and segm mAP of the final validation.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = 'configs/demo/flora_convnext-atto_mask-rcnn_demo-coco.py'


def last_metrics(work_dir: Path) -> dict:
    """The last validation record of the newest run in ``work_dir``."""
    from flora_mm.engine.logs import read_scalars
    val = [r for r in read_scalars(work_dir, latest_only=True) if 'coco/bbox_mAP' in r]
    if not val:
        raise RuntimeError(f'the newest run in {work_dir} has no validation result')
    return val[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=32)
    args = parser.parse_args()
    data_root = ROOT / 'data' / 'demo_coco'
    if not (data_root / 'annotations' / 'instances_val2017.json').exists():
        from flora_mm.data import make_coco
        make_coco(data_root, num_train=args.num_train, num_val=args.num_val, seed=0)
        print(f'generated demo data in {data_root}')
    start = time.time()
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), CONFIG, '--work-dir', args.work_dir, '--cfg-options',
           f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
           f'default_hooks.checkpoint.interval={args.epochs}']
    subprocess.run(cmd, cwd=ROOT, check=True)
    metrics = last_metrics(ROOT / args.work_dir)
    minutes = (time.time() - start) / 60
    print('\n' + '=' * 72)
    print(f'FLoRA ConvNeXt-V2-atto Mask R-CNN on the demo COCO data, {args.epochs} epochs in {minutes:.1f} min')
    for kind in ('bbox', 'segm'):
        print(f'  {kind}: mAP {metrics[f"coco/{kind}_mAP"]:.3f}  mAP@50 {metrics[f"coco/{kind}_mAP_50"]:.3f}  '
              f'mAP@75 {metrics[f"coco/{kind}_mAP_75"]:.3f}')
    print('=' * 72)


if __name__ == '__main__':
    main()

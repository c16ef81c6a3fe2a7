"""The demo (``tools/demo.py`` is its command line): adapting a detector to a new domain on CPU, FLoRA against the
frozen backbone and full fine-tuning.

The shipped source Mask R-CNN (``flora_mm://mask_rcnn_atto_source_coco``: our ConvNeXt-V2-atto with light heads,
trained on the clean synthetic source domain) meets a shifted target domain with the same classes (textures,
sensor noise, clutter, no colour cue; ``flora_mm.data.make_coco(shift=True)``, generated into data/target_coco).
The demo evaluates it there zero-shot (``tools/test.py``), then fine-tunes it on the target through
``tools/train.py`` (mmdet's runner and progress log) three ways -- frozen backbone (Base), FLoRA at LoRA r=2's
parameter budget, full fine-tuning -- prints one table, writes ``WORK_DIR/summary.json`` and draws predictions on
four target images (zero-shot / Base / FLoRA / Full / ground truth) with mmdet's visualizer into
``WORK_DIR/predictions.png``.

    tools/demo.py                                   # the demo (make demo)
    tools/demo.py --seed 1 --work-dir work_dirs/demo_seed1
    tools/demo.py --spread results/demo/seed*.json  # mean / spread of several seeds' summaries (markdown)
    tools/demo.py --cfg-options model.backbone.adapter.type=SSB   # another adapter in FLoRA's place
    tools/demo.py --cfg-options model.backbone.adapter.mpc=orthogonal model.backbone.adapter.type=LoRA
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from .runs import last_checkpoint, test_config, train_config

__all__ = ['CONFIG', 'DATA', 'RUNS', 'SOURCE', 'ZERO_SHOT', 'draw', 'ensure_data', 'fine_tuning_runs', 'finetune',
           'run', 'spread', 'table', 'trainable_backbone_params', 'zero_shot']

#: The checkout whose target config the demo trains.
ROOT = Path(__file__).resolve().parents[2]
CONFIG = 'configs/target/mask-rcnn_convnextv2-atto_flora-r10_6e_target-coco.py'
SOURCE = 'flora_mm://mask_rcnn_atto_source_coco'
DATA = dict(root='data/target_coco', num_train=256, num_val=64, num_test=256, img_size=128, seed=0, shift=True)
#: The fine-tuning runs: name -> config overrides (the config itself is FLoRA).
RUNS = {
    'Base': {'model.backbone.adapter': None, 'model.backbone.frozen_stages': 4},
    'FLoRA': {},
    'Full': {'model.backbone.adapter': None},
}
ZERO_SHOT = 'Zero-shot'
#: --quick (the tests): tiny data, one epoch per run
QUICK_DATA = dict(num_train=8, num_val=4, num_test=4, img_size=64)
QUICK = {'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 1, 'default_hooks.checkpoint.interval': 1}
METRICS = ('bbox_mAP', 'segm_mAP')
#: differences reported per seed by --spread
PAIRS = (('FLoRA', 'Base'), ('Full', 'FLoRA'), ('Full', 'Base'), ('Base', ZERO_SHOT))


def fine_tuning_runs(options: dict | None = None) -> dict[str, dict]:
    """The fine-tuning runs; ``options`` (``--cfg-options``) change the adapted run, which is then named by its
    adapter type (options of FLoRA that the new type does not have are dropped with a warning)."""
    if not options:
        return RUNS
    name = str(options.get('model.backbone.adapter.type', 'FLoRA'))
    return {'Base': RUNS['Base'], name: dict(options), 'Full': RUNS['Full']}


def ensure_data(root: Path, quick: bool = False) -> Path:
    from flora_mm.data import ensure_dataset
    spec = dict(DATA, **(QUICK_DATA if quick else {}))
    return ensure_dataset('make_coco', root / spec.pop('root'), **spec)


def _coco(metrics: dict) -> dict:
    return {k: round(100 * metrics[f'coco/{k}'], 1) for k in METRICS}


def zero_shot(work_dir: Path, root: Path) -> dict:
    """The source model on the target validation set, no training."""
    return _coco(test_config(ROOT / CONFIG, SOURCE, work_dir, RUNS['Base'], cwd=root, split='val'))


def finetune(work_dir: Path, overrides: dict, root: Path) -> dict:
    return _coco(train_config(ROOT / CONFIG, work_dir, overrides, 'coco/bbox_mAP', cwd=root))


def _cfg(overrides: dict):
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / CONFIG))
    cfg.merge_from_dict(overrides)
    return cfg


def trainable_backbone_params(overrides: dict) -> int:
    """Trainable parameters of the run's backbone (adapters, unfrozen weights, the detector's new output norms)."""
    from mmengine.registry import init_default_scope
    from flora_mm.models.budget import trainable_parameters
    cfg = _cfg(overrides)
    init_default_scope(cfg.default_scope)
    return trainable_parameters(cfg.model.backbone)[0]


def _detector(overrides: dict, checkpoint: str):
    """The run's detector with its weights (:func:`flora_mm.engine.export.load_model`: a full checkpoint, or an
    adapter-only one on the config's pretrained base)."""
    from flora_mm.engine.export import load_model
    cfg = _cfg(overrides)
    return load_model(cfg, checkpoint)[0].eval(), cfg


def draw(work_dir: Path, checkpoints: dict[str, tuple[dict, str]], root: Path, num_images: int = 4,
         score_thr: float = 0.5) -> Path:
    """Predictions of each model on the first target validation images, one column per model, ground truth last
    (mmdet's DetLocalVisualizer)."""
    import mmcv
    import numpy as np
    import torch
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.registry import init_default_scope
    from PIL import Image, ImageDraw
    register_all_modules()
    init_default_scope('mmdet')
    columns: dict[str, list[np.ndarray]] = {}
    dataset = None
    for name, (overrides, checkpoint) in checkpoints.items():
        model, cfg = _detector(overrides, checkpoint)
        if dataset is None:
            cfg.val_dataloader.dataset.data_root = str(root / cfg.val_dataloader.dataset.data_root)
            dataset = DATASETS.build(cfg.val_dataloader.dataset)
            visualizer = DetLocalVisualizer.get_instance('flora_mm_demo')
            visualizer.dataset_meta = dataset.metainfo
            columns['Ground truth'] = []
        columns[name] = []
        for i in range(min(num_images, len(dataset))):
            data = dataset[i]
            with torch.no_grad():
                pred = model.test_step(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))[0]
            image = mmcv.imread(pred.img_path, channel_order='rgb')
            visualizer.add_datasample(name, image, pred, draw_gt=False, pred_score_thr=score_thr)
            columns[name].append(visualizer.get_image())
            if len(columns['Ground truth']) <= i:
                gt = data['data_samples'].clone()
                gt.gt_instances.bboxes = gt.gt_instances.bboxes.tensor  # the visualizer wants a plain tensor
                visualizer.add_datasample('gt', image, gt, draw_pred=False)
                columns['Ground truth'].append(visualizer.get_image())
    order = [*checkpoints, 'Ground truth']
    scale, title = 2, 18
    h, w = columns[order[0]][0].shape[:2]
    rows = len(columns[order[0]])
    canvas = Image.new('RGB', (len(order) * w * scale, title + rows * h * scale), 'white')
    pen = ImageDraw.Draw(canvas)
    for c, name in enumerate(order):
        pen.text((c * w * scale + 4, 3), name, fill='black')
        for r, panel in enumerate(columns[name]):
            tile = Image.fromarray(panel).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (c * w * scale, title + r * h * scale))
    out = work_dir / 'predictions.png'
    canvas.save(out)
    return out


def table(summary: dict) -> str:
    lines = [f'{"method":<12}{"trainable backbone params":>27}{"bbox mAP":>10}{"segm mAP":>10}{"minutes":>9}']
    for name, run in summary['runs'].items():
        lines.append(f'{name:<12}{run["trainable_backbone_params"]:>27,}{run["bbox_mAP"]:>10.1f}'
                     f'{run["segm_mAP"]:>10.1f}{run["minutes"]:>9.1f}')
    return '\n'.join(lines)


def spread(paths: list[Path]) -> str:
    """Markdown: per method, mean and (min, max) of each metric over several runs' summaries (``summary.json``
    files, or the demo work dirs holding them)."""
    summaries = [json.loads((p / 'summary.json' if p.is_dir() else p).read_text()) for p in paths]
    seeds = [s['seed'] for s in summaries]
    lines = ['| method | trainable backbone params | bbox mAP mean (min - max) | segm mAP mean (min - max) |',
             '|---|---:|---:|---:|']
    for name in summaries[0]['runs']:
        runs = [s['runs'][name] for s in summaries]
        cells = [f'{statistics.mean(v):.1f} ({min(v):.1f} - {max(v):.1f})'
                 for v in ([r[k] for r in runs] for k in METRICS)]
        lines.append(f'| {name} | {runs[0]["trainable_backbone_params"]:,} | {cells[0]} | {cells[1]} |')
    lines += ['', '| paired difference (same seed) | bbox mAP mean (min - max) | segm mAP mean (min - max) |',
              '|---|---:|---:|']
    for a, b in PAIRS:
        if a in summaries[0]['runs'] and b in summaries[0]['runs']:
            cells = [f'{statistics.mean(d):+.1f} ({min(d):+.1f} - {max(d):+.1f})' for d in
                     ([s['runs'][a][k] - s['runs'][b][k] for s in summaries] for k in METRICS)]
            lines.append(f'| {a} - {b} | {cells[0]} | {cells[1]} |')
    return f'{len(summaries)} seeds ({", ".join(map(str, seeds))}), mAP in %:\n\n' + '\n'.join(lines)


def run(work_dir: Path, root: Path, seed: int = 0, quick: bool = False, names: list[str] | None = None,
        options: dict | None = None, picture: bool = True) -> dict:
    """Run the demo into ``work_dir`` (data under ``root``): zero-shot and the fine-tuning runs (``names``: a subset;
    ``options``: ``--cfg-options`` of the adapted run), the picture, ``summary.json``; the summary."""
    runs_spec = fine_tuning_runs(options)
    wanted = names or [ZERO_SHOT, *runs_spec]
    unknown = sorted(set(wanted) - {ZERO_SHOT, *runs_spec})
    if unknown:
        raise ValueError(f'unknown run(s) {unknown}; choose from {[ZERO_SHOT, *runs_spec]}')
    runs_spec = {name: spec for name, spec in runs_spec.items() if name in wanted}
    start = time.time()
    ensure_data(root, quick)
    runs = {}
    if ZERO_SHOT in wanted:
        t0 = time.time()
        runs[ZERO_SHOT] = dict(zero_shot(work_dir / 'zero_shot', root), trainable_backbone_params=0,
                               minutes=round((time.time() - t0) / 60, 2))
    for name, overrides in runs_spec.items():
        t0 = time.time()
        metrics = finetune(work_dir / name.lower(), {**overrides, 'randomness.seed': seed, **(QUICK if quick else {})},
                           root)
        runs[name] = dict(metrics, trainable_backbone_params=trainable_backbone_params(overrides),
                          minutes=round((time.time() - t0) / 60, 2))
    summary = dict(runs=runs, seed=seed, config=CONFIG, source=SOURCE, cfg_options=dict(options or {}),
                   data=dict(DATA, **(QUICK_DATA if quick else {})), quick=quick)
    if picture:
        checkpoints = {ZERO_SHOT: (RUNS['Base'], SOURCE)} if ZERO_SHOT in wanted else {}
        for name in runs_spec:
            checkpoints[name] = (runs_spec[name], last_checkpoint(work_dir / name.lower()))
        summary['picture'] = draw(work_dir, checkpoints, root).name  # beside summary.json
    summary['minutes'] = round((time.time() - start) / 60, 2)
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    return summary

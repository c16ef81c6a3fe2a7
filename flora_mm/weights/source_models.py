"""Train and export the shipped *source* task models (``flora_mm/weights``): Mask R-CNN (COCO format), Oriented
R-CNN (DOTA format) and UperNet (ADE20K format) on our ConvNeXt-V2-atto base, trained on the synthetic source
domain that their shifted targets (``flora_mm.data``, ``shift=True``) share the classes of.

    tools/make_source_models.py coco            # regenerate flora_mm/weights/mask_rcnn_atto_source_coco.{pth,json}
    tools/make_source_models.py coco dota ade20k

For each task: generate the source data under ``ROOT/data/source_<task>`` (once), train the task's config in
``configs/source/`` through ``tools/train.py`` (mmengine's runner, seed 0, deterministic), then export. The
backbone stays frozen during source training (``frozen_stages=4``), so the export checks that the trained model's
backbone is bit for bit the shipped base and writes only the rest (neck, heads, the backbone's output norms) in
fp16; ``flora_mm.weights.load`` puts the base back under ``backbone.``. A ``.json`` beside each file records the
settings, the source-domain validation metrics and the SHA-256 to enter in ``flora_mm.weights.WEIGHTS``.

``--root DIR`` runs everything (data, work dirs) under another directory, and ``--cfg-options`` shortens the
schedule: the tests regenerate each model twice on a two-iteration schedule and compare the files byte for byte.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from flora_mm import weights
from flora_mm.engine.runs import last_checkpoint, last_validation, train_config

__all__ = ['BASE', 'PREFIX', 'REPO', 'TASKS', 'ensure_data', 'export', 'make']

#: The checkout whose configs train the source models (configs/source/).
REPO = Path(__file__).resolve().parents[2]

#: config, data maker and its arguments, shipped name, validation metrics to record.
TASKS = {
    'coco': dict(config='configs/source/mask-rcnn_convnextv2-atto_frozen_12e_source-coco.py', maker='make_coco',
                 data=dict(num_train=1024, num_val=128, img_size=128, seed=100), name='mask_rcnn_atto_source_coco',
                 metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')),
    'dota': dict(config='configs/source/oriented-rcnn-le90_convnextv2-atto_frozen_2400it_source-dota.py',
                 maker='make_dota',
                 data=dict(num_train=1024, num_val=128, img_size=128, seed=100),
                 name='oriented_rcnn_atto_source_dota', metrics=('dota/mAP', 'dota/AP50', 'dota/AP75')),
    'ade20k': dict(config='configs/source/upernet_convnextv2-atto_frozen_1600it_source-ade20k.py', maker='make_ade20k',
                   data=dict(num_train=1024, num_val=128, img_size=128, seed=100),
                   name='upernet_atto_source_ade20k', metrics=('mIoU', 'aAcc', 'mAcc')),
}
BASE = 'convnextv2_atto_source'
PREFIX = 'backbone.'


def ensure_data(task: str, root: Path, **overrides) -> Path:
    """Generate the task's source data under ``root/data/source_<task>`` unless it is complete already."""
    from flora_mm.data import ensure_dataset
    return ensure_dataset(TASKS[task]['maker'], root / 'data' / f'source_{task}', shift=False,
                          **{**TASKS[task]['data'], **overrides})


def export(checkpoint: Path, out: Path, base: str = BASE, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """Write the trained model's tensors that are not its frozen base backbone, in fp16, to ``out``.

    Raises ``ValueError`` if a base tensor changed in training (the backbone was not frozen) or is missing."""
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    base_state = weights.load(weights.SCHEME + base, 'cpu')
    missing = [k for k in base_state if prefix + k not in state]
    changed = [k for k in base_state if prefix + k in state
               and not torch.equal(state[prefix + k], base_state[k].to(state[prefix + k].dtype))]
    if missing or changed:
        raise ValueError(f'{checkpoint}: the backbone is not the frozen base {base!r}: {len(missing)} tensors '
                         f'missing {missing[:3]}, {len(changed)} changed {changed[:3]}')
    own = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
           for k, v in state.items() if not (k.startswith(prefix) and k[len(prefix):] in base_state)}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(own, out)
    return own


def make(task: str, root: Path, out_dir: Path, cfg_options: dict, data_overrides: dict,
         export_only: bool = False) -> dict:
    """Train the task's source config (neck and heads on the frozen base) in ``root`` and export what is not the
    base to ``out_dir/<name>.pth`` with its ``.json`` record; ``export_only``: export the finished run."""
    start = time.time()
    spec = TASKS[task]
    ensure_data(task, root, **data_overrides)
    work_dir = root / 'work_dirs' / 'source' / task
    if export_only:
        val = last_validation(work_dir, spec['metrics'][0])
    else:
        val = train_config(REPO / spec['config'], work_dir, cfg_options, spec['metrics'][0], cwd=root)
    out = out_dir / f'{spec["name"]}.pth'
    own = export(Path(last_checkpoint(work_dir)), out)
    info = dict(task=task, config=spec['config'], cfg_options=cfg_options, base=BASE,
                data=dict(maker=f'flora_mm.data.{spec["maker"]}', shift=False, **{**spec['data'], **data_overrides}),
                source_val={k: val[k] for k in spec['metrics'] if k in val},
                tensors=len(own), parameters=sum(v.numel() for v in own.values()), dtype='fp16',
                sha256=weights.sha256(out), minutes=None if export_only else round((time.time() - start) / 60, 2),
                torch=torch.__version__, torch_threads=torch.get_num_threads())
    out.with_suffix('.json').write_text(json.dumps(info, indent=2) + '\n')
    print(f'{task}: wrote {out} ({out.stat().st_size / 2**20:.2f} MiB, {info["parameters"]:,} parameters, '
          f'sha256 {info["sha256"]}); source validation {info["source_val"]}; {info["minutes"]} min')
    return info

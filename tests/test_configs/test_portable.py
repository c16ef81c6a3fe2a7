"""No committed file holds a path of the machine it was made on; generated run configs are repository-relative."""
import re
import subprocess

from mmengine.config import Config

from tests.test_configs.smoke import ROOT
from tests.test_tools import load_tool

#: Absolute paths under the usual per-machine roots (checkouts, homes, temporary folders).
MACHINE_PATH = re.compile(r'(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt|private|var/folders)/')
BINARY = ('.png', '.jpg', '.pth', '.safetensors', '.whl')


def test_no_committed_file_holds_a_machine_path():
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if name.endswith(BINARY) or not (ROOT / name).is_file():
            continue
        for number, line in enumerate((ROOT / name).read_text(errors='replace').splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f'{name}:{number}: {line.strip()[:100]}')
    assert not offenders, '\n'.join(offenders[:20])


def test_generated_run_config_is_repository_relative_and_loads(tmp_path):
    reproduce = load_tool('reproduce')
    cfg_dir = ROOT / 'results' / 'reproduction' / 'configs' / 'coco'
    text = reproduce.run_config('coco', dict(adapter=None), seed=3, iters=5, data_root=ROOT / 'data' / 'repro_coco',
                                base_ckpt=ROOT / 'checkpoints' / 'base.pth', cfg_dir=cfg_dir)
    assert not MACHINE_PATH.search(text) and str(ROOT) not in text
    path = cfg_dir / '_test_generated.py'
    try:
        path.write_text(text)
        cfg = Config.fromfile(str(path))
    finally:
        path.unlink()
    assert cfg.train_dataloader.dataset.data_root == 'data/repro_coco/'
    assert cfg.model.backbone.init_cfg.checkpoint == 'checkpoints/base.pth'
    assert cfg.val_evaluator.ann_file == 'data/repro_coco/annotations/instances_val2017.json'
    assert cfg.randomness.seed == 3 and cfg.model.type == 'MaskRCNN'


def test_committed_run_configs_load_from_any_checkout():
    for path in sorted((ROOT / 'results' / 'reproduction' / 'configs').glob('*/*.py'))[:3]:
        cfg = Config.fromfile(str(path))
        assert not MACHINE_PATH.search(cfg.pretty_text), path

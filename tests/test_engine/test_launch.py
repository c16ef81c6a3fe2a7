"""What tools/train.py and tools/test.py check before building anything: the files a run reads exist."""
import pytest
from mmengine.config import Config

import flora_mm.mm  # noqa: F401
from flora_mm.data import make_coco
from flora_mm.engine.launch import check_run_files, load_run_config
from tests.test_configs.smoke import ROOT


@pytest.mark.parametrize('config, missing', [
    ('configs/flora_convnext_coco.py', ['train_dataloader.dataset.data_root: data/coco/',
                                        'data/coco/annotations/instances_train2017.json',
                                        'val_dataloader.dataset.ann_file: data/coco/annotations/instances_val2017',
                                        'checkpoint: checkpoints/convnextv2_large_22k_224_ema.pt']),
    ('configs/flora_internvit_ade20k.py', ['train_dataloader.dataset.data_root: data/ade/ADEChallengeData2016',
                                           'Pretrained init_cfg checkpoint']),
])
def test_paper_configs_name_every_missing_file_before_building(config, missing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ or checkpoints/ here
    cfg = Config.fromfile(str(ROOT / config))
    with pytest.raises(FileNotFoundError) as info:
        check_run_files(cfg, 'train')
    text = str(info.value)
    assert all(m in text for m in missing), text
    assert 'docs/datasets.md' in text and 'docs/checkpoints.md' in text


def test_test_mode_checks_the_test_split_and_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(ROOT / 'configs/flora_convnext_coco.py'))
    cfg.load_from = 'work_dirs/missing.pth'
    with pytest.raises(FileNotFoundError, match=r'(?s)test_dataloader.*load_from: work_dirs/missing.pth') as info:
        check_run_files(cfg, 'test')
    assert 'train_dataloader' not in str(info.value)


def test_the_paper_config_on_generated_data_has_everything(tmp_path, monkeypatch):
    """docs/datasets.md's command: generated COCO-format data under data/demo_coco, no pretrained file needed."""
    monkeypatch.chdir(tmp_path)
    cfg = load_run_config(str(ROOT / 'configs/synthetic/mask-rcnn_convnextv2-l_flora-r42_1e_synthetic-coco.py'))
    with pytest.raises(FileNotFoundError, match='make_demo_data.py coco'):
        check_run_files(cfg, 'train')
    make_coco(tmp_path / 'data/demo_coco', num_train=2, num_val=1, img_size=32)
    check_run_files(cfg, 'train')
    check_run_files(cfg, 'test')
    assert cfg.model.roi_head.bbox_head.num_classes == 3 and cfg.model.backbone.arch == 'large'


def test_skip_base_check_reaches_the_hook(tmp_path):
    cfg = load_run_config(str(ROOT / 'configs/flora_convnext_coco.py'), check_base=False)
    (hook, ) = [h for h in cfg.custom_hooks if h['type'] == 'AdapterCheckpointHook']
    assert hook['check_base'] is False
    cfg = load_run_config(str(ROOT / 'configs/flora_convnext_coco.py'))
    (hook, ) = [h for h in cfg.custom_hooks if h['type'] == 'AdapterCheckpointHook']
    assert hook.get('check_base', True) is True

"""ImageNet-format data during a classification run: an unreadable image is skipped with a warning that names it and
counted (it never ends a run), a transform that fails names its file, and a split whose class folders differ from the
expected ones is refused before the labels could disagree."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

from sdae_suite.classification import dataset as dataset_module
from sdae_suite.classification.dataset import ImageFolderError, SdAEImageFolder
from sdae_suite.commands.train import set_data_root
from sdae_suite.engine import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]
FT_DEMO = ROOT / 'cls_configs' / 'sdae_vit-tiny-p8_1xb64-ft_demo.py'
DET_DEMO = ROOT / 'det_configs' / 'sdae_maskrcnn_demo.py'
CLASSES = ('circle', 'ring', 'square')


def _tree(root: Path, per_class: int = 4, size: int = 40) -> Path:
    for split in ('train', 'val'):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new('RGB', (size, size), (80 * c, 20 * i, 0)).save(root / split / name / f'{name}_{i}.JPEG')
    return root


def _corrupt(path: Path) -> Path:
    path.write_bytes(b'\xff\xd8\xff\xe0 this is not a JPEG any more')
    return path


def test_unreadable_image_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch):
    root = _tree(tmp_path / 'in')
    bad = _corrupt(root / 'train' / 'circle' / 'circle_1.JPEG')
    logged = []
    monkeypatch.setattr(dataset_module, 'print_log', lambda msg, **kw: logged.append((msg, kw.get('level'))))
    ds = SdAEImageFolder(str(root), 'train', transform=dict(type='eval', input_size=32))
    index = [p for p, _ in ds.samples].index(str(bad))
    sample = ds[index]
    # the next image of the split takes its place; the skip is counted for SkippedImagesHook
    assert sample['data_samples'] == dict(label=0, index=index, num_skipped=1)
    assert torch.equal(sample['inputs'], ds[index + 1]['inputs'])
    assert len(logged) == 1 and logged[0][0].startswith(f'{bad}: unreadable image skipped')
    assert 'tools/check_dataset.py --decode' in logged[0][0] and logged[0][1] == 30  # logging.WARNING
    assert ds[0]['data_samples']['num_skipped'] == 0


def test_a_failing_transform_names_the_file(tmp_path):
    root = _tree(tmp_path / 'in', per_class=1)
    ds = SdAEImageFolder(str(root), 'val', transform=dict(type='eval', input_size=32))

    def broken(img):
        raise ValueError('bits must be between or equal to 1 and 8')

    ds.transform = broken
    with pytest.raises(RuntimeError, match=r'circle_0\.JPEG: the val transform failed on this image \(ValueError'):
        ds[0]


def test_class_folders_must_match_the_expected_ones(tmp_path):
    root = _tree(tmp_path / 'in', per_class=1)
    with pytest.raises(ImageFolderError, match=r"missing 1: \['star'\]; extra 0"):
        SdAEImageFolder(str(root), 'val', classes=[*CLASSES, 'star'])
    with pytest.raises(ImageFolderError, match='folder not found.*train/<class>'):
        SdAEImageFolder(str(root), 'test')


def test_training_survives_unreadable_images_and_counts_them(tmp_path):
    """A demo fine-tuning run over a split with two broken files: it finishes, the hook logs each skip with the running
    total, and the total travels in the checkpoint (a resumed run goes on counting)."""
    root = _tree(tmp_path / 'in', per_class=8)
    bad = [_corrupt(root / 'train' / 'ring' / 'ring_3.JPEG'), _corrupt(root / 'train' / 'square' / 'square_0.JPEG')]
    cfg = Config.fromfile(str(FT_DEMO))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(root)
        cfg[key].num_workers = 0
    cfg.train_dataloader.batch_size = 8
    cfg.model.num_classes = cfg.model.mixup.num_classes = len(CLASSES)
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 10  # no validation: this test is about the training split
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=1)]
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.save_best = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'SkippedImagesHook')
    # 24 images, 3 batches of 8 (drop_last): each broken file is read once per epoch
    assert hook.total == len(bad)
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    assert all(f'{p}: unreadable image skipped' in log for p in bad)
    assert f'({len(bad)} so far)' in log
    ckpt = safe_torch_load(tmp_path / 'work' / 'epoch_1.pth')
    assert ckpt['meta']['skipped_images'] == len(bad)


def test_data_root_option_moves_every_split_and_the_coco_evaluator(tmp_path):
    """tools/train.py / test.py --data-root: every split's dataset, and for COCO the evaluator's annotation file, which
    mmdet's CocoMetric reads from its own path."""
    cfg = Config.fromfile(str(FT_DEMO))
    set_data_root(cfg, '/data/imagenet')
    assert [cfg[k].dataset.data_root for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')] == [
        '/data/imagenet'] * 3
    det = Config.fromfile(str(DET_DEMO))
    set_data_root(det, str(tmp_path / 'coco'))
    assert det.test_dataloader.dataset.data_root == str(tmp_path / 'coco')
    assert det.val_evaluator.ann_file == det.test_evaluator.ann_file == str(
        tmp_path / 'coco' / 'annotations' / 'instances_val.json')

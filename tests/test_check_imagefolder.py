"""ImageNet-format trees are checked at the door: tools/check_dataset.py --kind imagenet and the start of every
classification run name each class mismatch, empty class, wrong class count and unreadable image with its folder or
file, and pass a clean tree with its counts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from sdae_suite.classification.dataset import scan_split as dataset_scan_split
from sdae_suite.commands import check_dataset
from sdae_suite.preflight import imagefolder
from sdae_suite.preflight.dataset import DatasetError, Findings, check_run_datasets
from sdae_suite.preflight.imagefolder import check_imagefolder_root, check_images, image_problem

REPO = Path(__file__).resolve().parents[1]
# the demo linear-probing config (its batch is in its name: the file is found, not spelled)
LINEAR_DEMO = next(iter(sorted(REPO.glob('cls_configs/sdae_vit-tiny-p8_*-linear_demo.py'))),
                   REPO / 'cls_configs/sdae_vit-tiny-p8_1xb32-linear_demo.py')


def _image(path: Path, seed: int = 0, fmt: str = 'JPEG', size: int = 48) -> Path:
    """A small noisy image: noise makes the compressed data long enough to cut or corrupt in the middle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """layout: split -> class -> number of JPEGs (0: an empty class folder)."""
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(root / split / cls / f'{cls}_{i}.JPEG', seed=i)
    return root


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _corrupt_middle(path: Path) -> Path:
    """Header and end marker intact, entropy-coded data broken by SOI markers: only a full decode notices."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 40] = b'\xff\xd8' * 20
    path.write_bytes(bytes(data))
    return path


def _demo_cfg(root: Path) -> Config:
    cfg = Config.fromfile(str(LINEAR_DEMO))
    cfg.train_dataloader.dataset.data_root = str(root)
    cfg.val_dataloader.dataset.data_root = str(root)
    cfg.test_dataloader.dataset.data_root = str(root)  # a copy of val_dataloader once the config is read
    return cfg


SIX = {c: 2 for c in ('circle', 'cross', 'ring', 'square', 'star', 'triangle')}


def test_broken_tree_names_every_problem(tmp_path):
    root = _tree(tmp_path / 'in', {'train': {'cat': 2, 'dog': 2, 'fox': 0, 'owl': 2},
                                   'val': {'cat': 1, 'dog': 1, 'fox': 1, 'yak': 1}})
    truncated = _truncate(root / 'train/cat/cat_0.JPEG')
    png = _truncate(_image(root / 'train/dog/dog_png.png', fmt='PNG'))
    garbage = []
    for i in range(11):  # 13 unreadable in all: the listing shows 10 and counts the rest
        garbage.append(root / f'train/owl/zz_{i:02d}.jpg')
        garbage[-1].write_bytes(b'' if i == 0 else b'<html>404 Not Found</html>')
    (root / 'val/stray.JPEG').write_bytes(truncated.read_bytes())  # outside any class folder
    f = Findings()
    check_imagefolder_root(root, f, num_classes=4)
    p = f.problems
    assert p['classes missing from val'] == [p['classes missing from val'][0]]
    assert '1 class folders' in p['classes missing from val'][0] and 'owl' in p['classes missing from val'][0]
    assert 'yak' in p['classes missing from train'][0] and str(root / 'train') in p['classes missing from train'][0]
    assert len(p['empty class folders']) == 1 and str(root / 'train/fox') in p['empty class folders'][0]
    unreadable = p['unreadable images']
    assert len(unreadable) == 13
    assert any(m.startswith(f'{truncated}: truncated JPEG') and 'ff d9' in m for m in unreadable)
    assert any(m.startswith(f'{png}: truncated PNG') for m in unreadable)
    assert any(m.startswith(f'{garbage[0]}: empty file (0 bytes)') for m in unreadable)
    assert all('Remove or replace it' in m for m in unreadable)
    assert 'stray.JPEG' in p['images outside class folders'][0]
    assert 'class count' not in p  # train has 4 class folders, as expected
    text = f.render()
    assert 'PROBLEM unreadable images (13):' in text and '... and 3 more' in text
    assert f.errors() == f.problems  # every kind here stops a run


def test_clean_tree_passes_with_its_counts(tmp_path):
    root = _tree(tmp_path / 'in', {'train': {'a': 3, 'b': 2, 'c': 2}, 'val': {'a': 1, 'b': 1, 'c': 1}})
    padded = root / 'train/a/a_0.JPEG'
    padded.write_bytes(padded.read_bytes() + b'\x00' * 30)  # padding after FFD9 is allowed
    trailer = root / 'train/b/b_0.JPEG'
    trailer.write_bytes(trailer.read_bytes() + b'camera trailer ' * 10)  # no FFD9 at the end, but it decodes
    (root / 'train/a/notes.txt').write_text('not an image')
    f = Findings()
    trees = check_imagefolder_root(root, f, num_classes=3)
    assert f.ok(), f.render()
    assert f'imagenet: {root / "train"} - 3 classes, 7 images' in f.info
    assert f'imagenet: {root / "val"} - 3 classes, 3 images' in f.info
    assert any('1 files without an image extension are not read' in m and 'notes.txt' in m for m in f.info)
    assert any(m.startswith(f'imagenet: {root} - 10 images checked (headers and end markers) in ') for m in f.info)
    for split, tree in trees.items():  # the same classes and files the dataset will read
        classes, samples = dataset_scan_split(root / split)
        assert tree.classes == classes
        assert [str(p) for c in tree.classes for p in tree.images[c]] == [s for s, _ in samples]


def test_class_count_names_both_numbers(tmp_path):
    root = _tree(tmp_path / 'in', {'train': {'a': 1, 'b': 1, 'c': 1}, 'val': {'a': 1, 'b': 1, 'c': 1}})
    f = Findings()
    check_imagefolder_root(root, f, num_classes=1000, num_classes_source='model.num_classes')
    assert list(f.problems) == ['class count']
    assert '3 class folders, expected 1000 (model.num_classes)' in f.problems['class count'][0]


def test_full_decode_finds_corrupt_data_behind_a_valid_header(tmp_path):
    bad = _corrupt_middle(_image(tmp_path / 'x.JPEG'))
    assert bad.read_bytes().endswith(b'\xff\xd9')
    assert image_problem(bad) is None  # header and end marker are fine ...
    why = image_problem(bad, decode=True)  # ... the pixels are not
    assert why is not None and why.startswith('cannot be decoded (OSError')
    root = _tree(tmp_path / 'in', {'train': {'a': 2}, 'val': {'a': 1}})
    _corrupt_middle(root / 'train/a/a_1.JPEG')
    f = Findings()
    check_imagefolder_root(root, f, decode=True)
    assert [m.split(':')[0] for m in f.problems['unreadable images']] == [str(root / 'train/a/a_1.JPEG')]
    assert any('images checked (decoded)' in m for m in f.info)
    assert check_dataset.main([str(root), '--num-classes', '1']) == 0  # headers: the ImageNet default
    assert check_dataset.main([str(root), '--num-classes', '1', '--decode']) == 1


def test_missing_split_and_unsorted_val(tmp_path):
    root = _tree(tmp_path / 'in', {'train': {'a': 1}})
    f = Findings()
    check_imagefolder_root(root, f)
    assert str(root / 'val') in f.problems['missing split folder'][0] and 'train/<class>' in \
        f.problems['missing split folder'][0]
    _image(root / 'val/ILSVRC2012_val_00000001.JPEG')
    f = Findings()
    check_imagefolder_root(root, f)
    assert 'no class sub-folders but 1 images directly in it' in f.problems['no class folders'][0]


def test_progress_reports_reach_the_total(tmp_path, monkeypatch, capsys):
    paths = [_image(tmp_path / f'{i}.png', seed=i, fmt='PNG', size=8) for i in range(300)]
    calls = []
    assert check_images(paths, progress=lambda *a: calls.append(a)) == []
    assert calls[-1][:2] == (300, 300) and len(calls) == 2  # one call per batch of 256
    monkeypatch.setattr(imagefolder, 'PROGRESS_MIN_FILES', 100)  # a "large" tree: progress on stderr by default
    check_images(paths)
    assert '300/300 files (100 %)' in capsys.readouterr().err


def test_cli_exit_codes_and_detection(tmp_path):
    clean = _tree(tmp_path / 'clean', {'train': {'a': 1, 'b': 1}, 'val': {'a': 1, 'b': 1}})
    broken = _tree(tmp_path / 'broken', {'train': {'a': 1, 'b': 1}, 'val': {'a': 1}})
    _truncate(broken / 'train/a/a_0.JPEG')
    report = tmp_path / 'report.json'
    tool = [sys.executable, str(REPO / 'tools/check_dataset.py')]
    runs = [subprocess.Popen([*tool, str(clean), '--num-classes', '2', '--json', str(report)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT),  # kind detected from the layout
            subprocess.Popen([*tool, str(broken), '--kind', 'imagenet', '--num-classes', '2'], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    (out_clean, _), (out_broken, _) = (r.communicate(timeout=120) for r in runs)
    assert runs[0].returncode == 0, out_clean
    rep = json.loads(report.read_text())
    assert rep['kind'] == 'imagenet' and rep['ok'] and rep['num_classes'] == 2 and rep['decode'] is False
    assert runs[1].returncode == 1, out_broken
    assert 'PROBLEM classes missing from val (1):' in out_broken and str(broken / 'train/a/a_0.JPEG') in out_broken


def test_cli_class_count_defaults(tmp_path, capsys):
    root = _tree(tmp_path / 'demo/pool', {'train': {'a': 1, 'b': 1}, 'val': {'a': 1, 'b': 1}})
    report = tmp_path / 'r.json'
    assert check_dataset.main([str(root), '--json', str(report)]) == 1  # the real dataset's 1000 classes expected
    assert '2 class folders, expected 1000' in capsys.readouterr().out
    (root.parent / 'meta.json').write_text(json.dumps({'pretrain': {'folders': ['a', 'b']}}))  # a demo set
    assert check_dataset.main([str(root), '--json', str(report)]) == 0
    assert json.loads(report.read_text())['num_classes'] == 2
    assert check_dataset.main([str(root / 'train')]) == 1
    assert f'pass {root}' in capsys.readouterr().out  # one level too deep: the parent is named


def test_run_start_checks_the_demo_linear_config(tmp_path):
    broken = _tree(tmp_path / 'broken', {'train': SIX, 'val': {**SIX, 'star': 0}})
    bad = _truncate(broken / 'val/ring/ring_1.JPEG')
    with pytest.raises(DatasetError) as err:
        check_run_datasets(_demo_cfg(broken), ('train_dataloader', 'val_dataloader'))
    msg = str(err.value)
    assert 'train_dataloader+val_dataloader (SdAEImageFolder' in msg and msg.count(f'data_root {broken})') == 1
    assert f'{broken / "val/star"}: no image files' in msg
    assert f'{bad}: truncated JPEG' in msg and 'Remove or replace it' in msg
    clean = _tree(tmp_path / 'clean', {'train': SIX, 'val': SIX})
    lines = check_run_datasets(_demo_cfg(clean), ('train_dataloader', 'val_dataloader'))
    assert f'train_dataloader+val_dataloader: imagenet: {clean / "train"} - 6 classes, 12 images' in lines
    assert f'train_dataloader+val_dataloader: imagenet: {clean / "val"} - 6 classes, 12 images' in lines
    wrong = _demo_cfg(clean)
    wrong.model.num_classes = 1000
    with pytest.raises(DatasetError, match=r'6 class folders, expected 1000 \(model.num_classes\)'):
        check_run_datasets(wrong, ('test_dataloader',))  # tools/test.py: the val split alone

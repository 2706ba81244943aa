"""tools/check_dataset.py passes the demo sets and names each defect of a broken copy with its file; its rules for the
annotations mmdet drops agree with what mmdet keeps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from sdae_suite.commands import check_dataset
from sdae_suite.preflight.dataset import DROPPED, Findings, check_coco_file


def _check(root: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / 'report.json'
    code = check_dataset.main([str(root), '--json', str(report), *extra])
    return code, json.loads(report.read_text()), report.read_text()


def test_demo_sets_pass(demo, tmp_path, capsys):
    for sub, kind, n in (('coco', 'coco', 6), ('ade', 'ade', 8)):
        code, rep, _ = _check(demo / sub, tmp_path)
        assert code == 0 and rep['ok'] and rep['kind'] == kind and rep['num_classes'] == n, rep
    assert 'OK' in capsys.readouterr().out


def test_broken_coco_copy_lists_every_defect(demo, tmp_path):
    root = tmp_path / 'coco'
    shutil.copytree(demo / 'coco', root)
    shutil.copy(demo / 'meta.json', tmp_path)  # the class counts of a demo set come from its meta.json
    ann_file = root / 'annotations/instances_train.json'
    data = json.loads(ann_file.read_text())
    images = sorted((root / 'train').glob('*.jpg'))
    images[0].unlink()  # missing file
    images[1].write_bytes(b'not a jpeg')  # undecodable
    data['annotations'][0]['bbox'] = [5, 5, 0, 10]  # zero width
    data['annotations'][1]['category_id'] = 99
    data['annotations'][2]['image_id'] = 12345
    data['annotations'][3]['segmentation'] = [[1, 2, 3, 4]]  # two points
    data['annotations'][4]['bbox'] = [1000, 1000, 10, 10]  # an annotation out of the image
    data['annotations'][5]['area'] = 0  # mmdet drops zero-area annotations
    data['categories'] = data['categories'][:5]
    ann_file.write_text(json.dumps(data))
    (root / 'val').rename(root / 'valid')  # wrong folder name
    code, rep, text = _check(root, tmp_path)
    assert code == 1 and not rep['ok']
    problems = rep['problems']
    assert any(images[0].name in m for m in problems['missing image files'])
    assert any(images[1].name in m for m in problems['undecodable images'])
    assert any('non-positive' in m for m in problems['degenerate boxes'])
    zero_area_id = data['annotations'][5]['id']
    assert any(f'annotation id {zero_area_id}: area 0' in m and 'zero-area' in m for m in problems['degenerate boxes'])
    assert any('lies outside' in m and '[1000, 1000, 10, 10]' in m for m in problems['boxes outside the image'])
    assert any('category_id 99' in m for m in problems['unknown category ids'])
    assert any('image_id 12345' in m for m in problems['dangling image ids'])
    assert any('>= 3' in m for m in problems['bad polygons'])
    assert any('5 categories, expected 6' in m for m in problems['class count'])
    assert any('val2017/' in m for m in problems['missing image folder'])


def test_broken_ade_copy_lists_every_defect(demo, tmp_path):
    root = tmp_path / 'ade'
    shutil.copytree(demo / 'ade', root)
    shutil.copy(demo / 'meta.json', tmp_path)
    labels = sorted((root / 'annotations/training').glob('*.png'))
    labels[0].unlink()
    seg = cv2.imread(str(labels[1]), cv2.IMREAD_UNCHANGED)
    seg[0, 0] = 42
    cv2.imwrite(str(labels[1]), seg)
    cv2.imwrite(str(labels[2]), np.zeros((10, 10, 3), np.uint8))
    shutil.rmtree(root / 'images/validation')
    code, rep, _ = _check(root, tmp_path)
    problems = rep['problems']
    assert code == 1
    assert any(labels[0].stem in m for m in problems['missing label maps'])
    assert any('values [42] > 8 for 8 classes' in m and labels[1].name in m
               for m in problems['label values out of range'])
    assert any(labels[2].name in m for m in problems['label maps not single-channel'])
    assert any('images/validation' in m for m in problems['missing folder'])


def test_unrecognisable_root(tmp_path, capsys):
    assert check_dataset.main([str(tmp_path)]) == 1
    assert 'neither COCO' in capsys.readouterr().out
    assert check_dataset.main([str(tmp_path / 'nope')]) == 1
    assert 'does not exist' in capsys.readouterr().out


def test_drop_rules_agree_with_what_mmdet_keeps(demo, tmp_path):
    from mmdet.datasets import CocoDataset

    classes = json.loads((demo / 'meta.json').read_text())['coco']['classes']
    ann_file = tmp_path / 'instances_train.json'
    data = json.loads((demo / 'coco/annotations/instances_train.json').read_text())
    anns = data['annotations']
    width = {im['id']: im['width'] for im in data['images']}
    for a, change in zip(anns, [
            lambda w: dict(bbox=[w + 5, 5, 10, 10]), lambda w: dict(bbox=[5, 5, -2, 10]), lambda w: dict(area=0),
            lambda w: dict(bbox=[5, 5, 0.5, 10]), lambda w: dict(category_id=99),
            lambda w: dict(bbox=[w - 5, 5, 20, 10]),  # partly outside: kept
            lambda w: dict(bbox=[w + 5, 5, 10, 10], ignore=True),  # mmdet skips 'ignore' without looking at it
            lambda w: dict(image_id=-7)]):
        a.update(change(width[a['image_id']]))
    ann_file.write_text(json.dumps(data))
    f = Findings()
    check_coco_file(ann_file, demo / 'coco/train', f, decode=False, classes=classes)
    dropped = sum(len(f.problems.get(kind, [])) for kind in DROPPED)
    assert dropped == 6 and len(f.problems['boxes partly outside the image']) == 1 and not f.errors()

    ds = CocoDataset(ann_file=str(ann_file), data_prefix=dict(img=str(demo / 'coco/train')),
                     metainfo=dict(classes=classes), filter_cfg=None, pipeline=[], lazy_init=True)
    kept = sum(len(info['instances']) for info in ds.load_data_list())
    assert kept == len(anns) - 1 - dropped  # all but the ignored one and those we say mmdet drops

"""tools/check_dataset.py passes the demo sets and names each defect of a broken copy with its file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools import check_dataset, make_demo_data


@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('data') / 'demo'
    assert make_demo_data.main(['--out', str(out), '--num-pretrain', '6', '--num-train', '4', '--num-val', '2',
                                '--workers', '1']) == 0
    return out


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
    data['categories'] = data['categories'][:5]
    ann_file.write_text(json.dumps(data))
    (root / 'val').rename(root / 'valid')  # wrong folder name
    code, rep, text = _check(root, tmp_path)
    assert code == 1 and not rep['ok']
    problems = rep['problems']
    assert any(images[0].name in m for m in problems['missing image files'])
    assert any(images[1].name in m for m in problems['undecodable images'])
    assert any('non-positive' in m for m in problems['bad boxes'])
    assert any('lies outside' in m and '[1000, 1000, 10, 10]' in m for m in problems['bad boxes'])
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
    assert any('[42]' in m and labels[1].name in m for m in problems['label values out of range'])
    assert any(labels[2].name in m for m in problems['label maps not single-channel'])
    assert any('images/validation' in m for m in problems['missing folder'])


def test_unrecognisable_root(tmp_path, capsys):
    assert check_dataset.main([str(tmp_path)]) == 1
    assert 'neither COCO' in capsys.readouterr().out
    assert check_dataset.main([str(tmp_path / 'nope')]) == 1
    assert 'does not exist' in capsys.readouterr().out

"""Bad input caught when tools/train.py and tools/test.py start (preflight/): broken data, a typo in --cfg-options,
a checkpoint that is a folder, a text file or another model, each stopped with one message naming the file and the
problem; annotations mmdet would drop are counted in a warning; tools/export_backbone.py prints no traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sdae_suite.commands import export_backbone as export_tool
from sdae_suite.commands import pretrain as pretrain_tool
from sdae_suite.commands import test as test_tool
from sdae_suite.commands import train as train_tool

ROOT = Path(__file__).resolve().parents[1]
DET = str(ROOT / 'det_configs/sdae_maskrcnn_demo.py')
SEG = str(ROOT / 'seg_configs/sdae_upernet_demo.py')
NO_WORKERS = [f'{s}.{k}={v}' for s in ('train_dataloader', 'val_dataloader', 'test_dataloader')
              for k, v in (('num_workers', 0), ('persistent_workers', False))]


def _roots(root: Path) -> list[str]:
    return [f'{s}.dataset.data_root={root}/' for s in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def _train_exit(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        train_tool.main(argv)
    return str(e.value.code)


def _ade_copy(demo: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / 'ade'
    shutil.copytree(demo / 'ade', root)
    return root, sorted((root / 'annotations/training').glob('*.png'))


def test_ade_label_map_of_the_wrong_size_stops_training(demo, tmp_path):
    root, labels = _ade_copy(demo, tmp_path)
    cv2.imwrite(str(labels[1]), np.ones((20, 30), np.uint8))
    msg = _train_exit([SEG, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *_roots(root)])
    assert 'label size mismatch' in msg and f'{labels[1]}: 30x20 but the image' in msg
    assert not (tmp_path / 'w').exists()


def test_ade_class_id_out_of_range_stops_training_naming_the_map(demo, tmp_path):
    root, labels = _ade_copy(demo, tmp_path)
    seg = cv2.imread(str(labels[2]), cv2.IMREAD_UNCHANGED)
    seg[0, :5] = 49
    cv2.imwrite(str(labels[2]), seg)
    msg = _train_exit([SEG, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *_roots(root)])
    assert 'label values out of range' in msg and f'{labels[2]}: values [49] > 8 for 8 classes' in msg


def _coco_copy(demo: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / 'coco'
    shutil.copytree(demo / 'coco', root)
    return root, root / 'annotations/instances_train.json'


def test_coco_json_syntax_error_and_missing_annotations_are_one_clear_error(demo, tmp_path):
    root, ann = _coco_copy(demo, tmp_path)
    ann.write_text(ann.read_text()[:-20])
    msg = _train_exit([DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *_roots(root)])
    assert f'{ann}: not valid JSON' in msg and 'line 1 column' in msg and 'Traceback' not in msg

    data = json.loads((demo / 'coco/annotations/instances_train.json').read_text())
    del data['annotations']
    ann.write_text(json.dumps(data))
    msg = _train_exit([DET, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *_roots(root)])
    assert f"{ann}: no list under ['annotations']; this is not a COCO instances file" in msg


def test_coco_annotations_mmdet_drops_are_counted_in_a_warning(demo, tmp_path, capsys):
    from mmengine.config import Config

    root, ann = _coco_copy(demo, tmp_path)
    data = json.loads(ann.read_text())
    anns = data['annotations']
    anns[0]['bbox'] = [5000, 5000, 10, 10]
    anns[1]['bbox'] = [5, 5, -3, 10]
    anns[2]['area'] = 0
    anns[3]['category_id'] = 99
    ann.write_text(json.dumps(data))
    cfg = Config.fromfile(DET)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in _roots(root)))
    train_tool.check_data(cfg, ('train_dataloader', 'val_dataloader'), 'train', verbose=True)
    out = capsys.readouterr().out
    outside = next(line for line in out.splitlines() if 'boxes outside the image' in line)
    assert '1 annotations with boxes outside the image' in outside and 'mmdet would drop these' in outside
    assert f"First: [{anns[0]['id']}]" in outside
    degenerate = next(line for line in out.splitlines() if 'degenerate boxes' in line)
    assert '2 annotations with degenerate boxes (area <= 0 or a box side < 1 px)' in degenerate
    assert f"[{anns[1]['id']}, {anns[2]['id']}]" in degenerate
    assert "1 annotations with unknown category ids" in out and 'data checked in' in out


def test_pretrained_that_is_a_directory_or_a_text_file(tmp_path):
    msg = _train_exit([SEG, '--work-dir', str(tmp_path / 'w'), '--pretrained', str(tmp_path)])
    assert f'{tmp_path} is a directory, not a checkpoint file' in msg
    text = tmp_path / 'notes.pth'
    text.write_text('these are not weights\n')
    msg = _train_exit([SEG, '--work-dir', str(tmp_path / 'w'), '--pretrained', str(text)])
    assert f'{text} is not a checkpoint' in msg and "starts with b'thes'" in msg


@pytest.mark.parametrize('tool', [train_tool, test_tool])
def test_config_typo_in_cfg_options_suggests_the_key(tool, tmp_path):
    ckpt = tmp_path / 'x.pth'
    torch.save({}, ckpt)
    argv = [SEG, str(ckpt)] if tool is test_tool else [SEG]
    with pytest.raises(SystemExit) as e:
        tool.main([*argv, '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'train_dataloder.batch_size=2'])
    msg = str(e.value.code)
    assert "'train_dataloder' is not a key of" in msg and "did you mean 'train_dataloader'?" in msg


def test_pretrain_config_typo_suggests_the_key(tmp_path, capsys):
    cfg = str(ROOT / 'pretrain/configs/sdae_vit-tiny-p8_demo.py')
    assert pretrain_tool.main([cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'randomnes.seed=1']) == 2
    assert "did you mean 'randomness'?" in capsys.readouterr().err


def test_test_refuses_a_checkpoint_of_another_model(demo, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.chdir(demo.parent.parent)
    ckpt = tmp_path / 'resnet18.pth'
    resnet = torchvision.models.resnet18().state_dict()  # the ResNet-18 of the issue, random weights
    torch.save(resnet, ckpt)
    with pytest.raises(SystemExit) as e:
        test_tool.main([DET, str(ckpt), '--work-dir', str(tmp_path / 'w'), '--cfg-options', *NO_WORKERS])
    msg = str(e.value.code)
    assert f'{ckpt} is not a checkpoint of the model of {DET}' in msg
    assert ' model keys missing (first: [' in msg and f'{len(resnet)} unexpected keys' in msg and 'conv1.weight' in msg
    assert '100.0% of the model' in msg
    assert not (tmp_path / 'w/test_results.json').exists()


class NotAllowed:
    """Any class outside the checkpoint allow-list."""


def test_export_backbone_prints_the_message_without_traceback(tmp_path, capsys):
    refused = tmp_path / 'refused.pth'
    torch.save({'state_dict': {}, 'x': NotAllowed()}, refused)
    assert export_tool.main([str(refused), str(tmp_path / 'a.pth')]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'export error: {refused}: refused to unpickle') and 'Traceback' not in err

    arch = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_ratio=4.0)
    mismatched = tmp_path / 'mismatched.pth'
    from sdae_suite.backbones.vit import VisionTransformer
    sd = {f'encoder.{k}': v for k, v in VisionTransformer(**dict(arch, embed_dim=64)).state_dict().items()}
    torch.save({'state_dict': sd, 'meta': {'sdae': {'method': 'mae', 'arch': arch, 'epoch': 1}}}, mismatched)
    assert export_tool.main([str(mismatched), str(tmp_path / 'b.pth')]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'export error: {mismatched}: the student weights do not fit') and 'size mismatch' in err
    assert not (tmp_path / 'a.pth').exists() and not (tmp_path / 'b.pth').exists()

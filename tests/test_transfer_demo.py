"""Each demo config (Mask R-CNN with the multi-level adapter, Mask R-CNN with ViTDet's simple pyramid, UperNet) trains
one step and evaluates through tools/train.py and tools/test.py on a tiny copy of the demo data, loading a pretraining
checkpoint; the registries, the full-size configs and the run records are checked too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import sdae_suite.backbones  # noqa: F401  (registers the transfer classes)
from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.commands import make_demo_data
from sdae_suite.commands import test as test_tool
from sdae_suite.commands import train as train_tool
from sdae_suite.engine.atomic import atomic_torch_save
from sdae_suite.engine.checkpoint_io import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]
DEMOS = {
    'det_configs/sdae_maskrcnn_demo.py': ('det', ['coco/bbox_mAP', 'coco/segm_mAP']),
    'det_configs/sdae_vitdet_maskrcnn_demo.py': ('det', ['coco/bbox_mAP', 'coco/segm_mAP']),
    'seg_configs/sdae_upernet_demo.py': ('seg', ['mIoU', 'mAcc', 'aAcc']),
}
FULL = ['det_configs/sdae_maskrcnn.py', 'det_configs/sdae_vitdet_maskrcnn_100e.py', 'seg_configs/sdae_upernet.py']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A folder with data/demo (4 train / 2 val images per task) and a raw demo pretraining checkpoint."""
    ws = tmp_path_factory.mktemp('transfer')
    assert make_demo_data.main(['--out', str(ws / 'data/demo'), '--num-pretrain', '6', '--num-train', '4',
                                '--num-val', '2', '--workers', '1']) == 0
    torch.manual_seed(0)
    arch = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)
    student, teacher = VisionTransformer(**arch), VisionTransformer(**arch)  # the demo pretraining arch
    atomic_torch_save({'meta': {'sdae': {'method': 'sdae', 'arch': arch, 'epoch': 1}},
                       'state_dict': {**{f'encoder.{k}': v for k, v in student.state_dict().items()},
                                      **{f'teacher.{k}': v for k, v in teacher.state_dict().items()},
                                      'decoder.pred.weight': torch.zeros(192, 8)}}, ws / 'pretrain.pth')
    return ws


def test_same_classes_registered_in_both_toolboxes():
    from mmdet.registry import MODELS as DET
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_C
    from mmseg.registry import MODELS as SEG
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_C

    for name in ('SdAEViT', 'SimpleFeaturePyramid'):
        assert DET.get(name) is SEG.get(name) is not None, name
    assert DET_C.get('LayerDecayConstructor') is SEG_C.get('LayerDecayConstructor') is not None
    # mmseg's multi-level adapter is reached from mmdet configs by its scoped name, never registered twice
    assert DET.get('mmseg.Feature2Pyramid') is SEG.get('Feature2Pyramid') is not None
    assert 'Feature2Pyramid' not in DET.module_dict
    cfg = Config.fromfile(str(ROOT / 'det_configs/sdae_maskrcnn.py'))
    assert cfg.custom_imports.imports == ['sdae_suite.backbones', 'sdae_suite.engine',
                                          'sdae_suite.engine.safe_io_setup']


@pytest.mark.parametrize('config', FULL)
def test_full_size_configs_build_the_recipe(config):
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(ROOT / config))
    init_default_scope(cfg.default_scope)
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG

    model = (DET if cfg.default_scope == 'mmdet' else SEG).build(cfg.model)
    b = model.backbone
    assert (b.embed_dim, b.depth, b.patch_size) == (768, 12, 16)
    assert cfg.optim_wrapper.constructor == 'LayerDecayConstructor'
    assert cfg.model.backbone.init_cfg.branch == 'student'
    assert cfg.sync_bn == 'torch'  # SyncBN only where mmengine finds a process group
    if 'vitdet' in config:
        assert [blk.window_size for blk in b.blocks] == [14, 14, 0] * 4 and b.cls_token is None
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7 and cfg.train_cfg.max_iters == 184375
        assert cfg.default_hooks.logger.log_metric_by_epoch is False  # val metrics at their iteration
    elif cfg.default_scope == 'mmseg':
        assert b.grid == (32, 32) and cfg.model.test_cfg.mode == 'slide'
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65 and cfg.train_cfg.max_iters == 160000
    else:
        assert b.out_indices == [3, 5, 7, 11] and cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.75


@pytest.mark.parametrize('config', list(DEMOS))
def test_demo_config_trains_one_step_and_evaluates(config, workspace, monkeypatch):
    kind, metric_keys = DEMOS[config]
    monkeypatch.chdir(workspace)
    work = workspace / 'work' / Path(config).stem
    loader = dict(num_workers=0, persistent_workers=False)
    opts = ['train_cfg.max_iters=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1', 'param_scheduler=[]']
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{split}.{k}={v}' for k, v in loader.items()]
    train_tool.main([str(ROOT / config), '--work-dir', str(work), '--pretrained', str(workspace / 'pretrain.pth'),
                     '--pretrained-branch', 'teacher', '--cfg-options', *opts])
    status = json.loads((work / 'run_status.json').read_text())
    assert status['status'] == 'finished' and status['kind'] == kind and status['error'] is None
    assert status['pretrained'] == str(workspace / 'pretrain.pth') and status['recipe'] == Path(config).stem
    ckpt = work / 'iter_1.pth'
    assert ckpt.is_file() and (work / 'last_checkpoint').is_file()
    scalars = list(work.glob('*/vis_data/scalars.json'))
    records = [json.loads(line) for line in scalars[0].read_text().splitlines()]
    assert scalars and 'loss' in records[0]
    val_steps = [r['step'] for r in records if 'lr' not in r and not any(k.startswith('loss') for k in r)]
    assert val_steps == [1]  # logged at its iteration, not at mmengine's 'epoch 0'

    result = test_tool.main([str(ROOT / config), str(ckpt), '--cfg-options',
                             *[o for o in opts if o.startswith(('val_', 'test_'))]])
    written = json.loads((work / 'test_results.json').read_text())
    assert written == json.loads(json.dumps(result))
    assert written['task'] == kind and written['status'] == 'ok' and written['pretrained'] == status['pretrained']
    for key in metric_keys:
        assert isinstance(written['metrics'][key], float) and written['metrics'][key] >= 0, key


def test_resume_without_path_continues_from_the_latest_checkpoint(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    config = str(ROOT / 'seg_configs/sdae_upernet_demo.py')
    work = workspace / 'work' / 'resume'
    opts = ['train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
            'param_scheduler=[]',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False']
    train_tool.main([config, '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=1', *opts])
    train_tool.main([config, '--work-dir', str(work), '--resume', '--cfg-options', 'train_cfg.max_iters=2', *opts])
    assert safe_torch_load(work / 'iter_2.pth')['meta']['iter'] == 2
    runs = sorted(p for p in work.iterdir() if p.is_dir())
    assert len(runs) == 2
    lines = [json.loads(line) for line in (runs[-1] / 'vis_data/scalars.json').read_text().splitlines()]
    assert [r['iter'] for r in lines if 'loss' in r] == [2]  # the second run started where the first stopped

"""The measuring tools: FLOP counting, peaks and MFU, the speed benchmark's table and memory probe, and the CPU-side
pieces of `make gpu-check` (its GPU checks run on a GPU machine only)."""
from __future__ import annotations

import json

import pytest
import torch

from sdae_suite.backbones.vit import VisionTransformer
from sdae_suite.benchmarks import gpu_check
from sdae_suite.benchmarks.hardware import count_flops, known_bf16_peak, measured_matmul_peak, mfu, vit_forward_flops
from sdae_suite.benchmarks.speed import StepSpec, cpu_peak_memory, format_table, high_water_mb, measure

TINY = dict(size='test', img_size=32, patch_size=8, decoder='1x32x2', batch=2)


@pytest.mark.parametrize('name, tflops, entry', [
    ('NVIDIA H100 80GB HBM3', 989.4, 'H100'), ('NVIDIA H100 PCIe', 756.0, 'H100 PCIe'),
    ('NVIDIA H200', 989.4, 'H200'), ('NVIDIA H200 NVL', 835.0, 'H200 NVL'), ('NVIDIA A100-SXM4-80GB', 312.0, 'A100'),
    ('NVIDIA L40S', 362.0, 'L40S'), ('NVIDIA L40', 181.0, 'L40'), ('NVIDIA L4', 121.0, 'L4'),
])
def test_known_peaks_by_device_name(name, tflops, entry):
    assert known_bf16_peak(name) == (tflops * 1e12, entry)


def test_unknown_device_has_no_table_peak():
    assert known_bf16_peak('Tesla T4') is None and known_bf16_peak('cpu') is None


def test_mfu_arithmetic():
    assert mfu(flops_per_step=500e12, step_time_s=2.0, peak_flops=1000e12) == pytest.approx(0.25)


def test_flop_count_includes_attention_and_equals_the_closed_form():
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(3, 3, 32, 32)
    tokens, patches = 1 + 16, 16
    patch_embed = 2 * patches * (3 * 8 * 8) * 32
    expected = 3 * (vit_forward_flops(tokens, 32, depth=2) + patch_embed)
    assert count_flops(lambda: vit(x)) == expected


def test_matmul_peak_is_positive_and_finite():
    peak = measured_matmul_peak(torch.device('cpu'), n=256, repeats=3)
    assert 0 < peak < float('inf')


def test_memory_probe_reads_the_child_own_peak():
    ballast = torch.ones(300 * 2**20 // 4)  # the parent's peak RSS grows by 300 MB...
    ballast += 1
    before = high_water_mb()
    assert before >= 300
    growth = cpu_peak_memory(StepSpec(variant='mae', **TINY), threads=1)
    assert 0 <= growth < 200  # ...and the child's figure does not inherit it
    del ballast


def test_speed_measurement_compares_adamw_implementations():
    specs = [StepSpec(variant=v, optimizer=o, **TINY) for v in ('sdae', 'mae') for o in ('fused', 'foreach')]
    result = measure(specs, repeats=1, steps=1, threads=1, log=lambda m: None, probe_memory=False, peak_n=256)
    assert set(result['variants']) == {'sdae', 'sdae[foreach]', 'mae', 'mae[foreach]'}
    rows = result['variants']
    assert rows['sdae']['flops_per_step'] == rows['sdae[foreach]']['flops_per_step'] > rows['mae']['flops_per_step']
    assert set(result['fused_adamw_step_change']) == {'sdae, fused vs foreach', 'mae, fused vs foreach'}
    assert result['sdae_over_mae']['flops'] == pytest.approx(rows['sdae']['flops_per_step'] /
                                                             rows['mae']['flops_per_step'])
    table = format_table(result)
    assert 'sdae[foreach]' in table and 'AdamW sdae, fused vs foreach: step time' in table and 'SdAE / MAE' in table
    json.dumps(result)  # machine-readable as written


def test_fused_adamw_gives_the_same_update_as_foreach():
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    copies = [p.detach().clone().requires_grad_() for p in params]
    for group, impl in ((params, dict(fused=True)), (copies, dict(foreach=True))):
        opt = torch.optim.AdamW(group, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05, **impl)
        for step in range(3):
            for p in group:
                p.grad = torch.full_like(p, 0.1 * (step + 1))
            opt.step()
    for a, b in zip(params, copies):
        assert torch.allclose(a, b, atol=1e-6)


def test_pretraining_configs_use_fused_adamw():
    from mmengine.config import Config

    cfg = Config.fromfile('pretrain/configs/sdae_vit-base-p16_300e_in1k.py')
    assert cfg.optim_wrapper.optimizer.fused is True


# ---- make gpu-check, the CPU-side pieces ----

def test_gpu_check_without_gpu_says_so_and_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert gpu_check.main() == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ['[gpu-check] no CUDA GPU on this machine: nothing to check (exit 0)']


def test_check_table_and_failures():
    def boom():
        raise RuntimeError('nccl unhappy\nsecond line')

    checks = [gpu_check.Check('sdae step', True, 'MFU 45.0%'), gpu_check.run_check('torchrun', boom)]
    assert not checks[1].ok and checks[1].figure == 'RuntimeError: nccl unhappy'
    table = gpu_check.format_table(checks)
    assert 'sdae step  PASS    MFU 45.0%' in table and 'torchrun   FAIL' in table
    assert table.splitlines()[-1] == '1/2 checks passed, 1 FAILED'
    assert gpu_check.markdown_table(checks).splitlines()[2] == '| sdae step | PASS | MFU 45.0% |'


@pytest.mark.parametrize('names, fused', [
    (['aten::_scaled_dot_product_flash_attention', 'void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>'],
     True),
    (['aten::_scaled_dot_product_efficient_attention', 'fmha_cutlassF_bf16_aligned_64x64_rf_sm80'], True),
    (['aten::_scaled_dot_product_attention_math', 'aten::bmm'], False),
    ([], False),
])
def test_fused_attention_recognised_from_kernel_names(names, fused):
    assert gpu_check.uses_fused_attention(names) is fused


def test_resume_comparison(tmp_path):
    full = {1: 1.0, 2: 0.9, 3: 0.8, 4: 0.7}
    assert gpu_check.resumed_matches(full, {3: 0.8, 4: 0.7}) == (True, 0.0)
    ok, worst = gpu_check.resumed_matches(full, {3: 0.8, 4: 0.71})
    assert not ok and worst == pytest.approx(0.01 / 0.7)
    assert gpu_check.resumed_matches(full, {5: 0.6})[0] is False and gpu_check.resumed_matches(full, {})[0] is False
    log = tmp_path / '20261203_120000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    log.write_text('\n'.join(json.dumps(r) for r in [dict(lr=0.1, loss=1.5, iter=1, epoch=1), dict(acc=3, step=1),
                                                     dict(loss=1.25, iter=2, epoch=1)]))
    assert gpu_check._losses(tmp_path) == {1: 1.5, 2: 1.25}


def test_tier1_step_checks_run_on_cpu_at_tiny_size():
    checks, figures = gpu_check.check_step_mfu(batch=2, device='cpu', peak_n=256, repeats=1, size='test', img_size=32,
                                               patch_size=8, decoder='1x32x2')
    assert [c.name for c in checks] == ['sdae step, batch 2', 'mae step, batch 2', 'SdAE / MAE step time']
    assert figures['peak_source'] == 'measured matmul' and figures['variants']['sdae']['mfu'] > 0
    assert 'MFU' in checks[0].figure and 'target >= 40%' in checks[0].figure


def test_nonfinite_loss_check_passes_on_cpu():
    ok, figure, _ = gpu_check.check_nonfinite_fp16('cpu')
    assert ok and figure.startswith('stopped before the step')


# ---- fine-tuning: ours vs timm step, data pipeline, workers ----

FT_TINY = dict(size='test', img_size=32, patch_size=8, num_classes=10, batch=4)


def test_finetune_step_benchmark_runs_at_tiny_size_and_reports_its_fields():
    from sdae_suite.benchmarks.finetune_speed import OURS, REFERENCE, FinetuneSpec, finetune_step_flops, format_step
    from sdae_suite.benchmarks.finetune_speed import measure as measure_ft

    spec = FinetuneSpec(**FT_TINY)
    threads = torch.get_num_threads()
    result = measure_ft(spec, rounds=2, warmup=1, threads=1, log=lambda m: None)
    # the caller's thread count is back: later computations in this process keep their numerics
    assert torch.get_num_threads() == threads
    assert set(result['models']) == {OURS, REFERENCE}
    for row in result['models'].values():
        assert len(row['wall_s']) == len(row['cpu_s']) == 2
        assert row['median_ms'] > 0 and row['img_per_s'] > 0 and torch.isfinite(torch.tensor(row['loss']))
        # the same computation: the same FLOPs, which are the closed form's
        assert row['flops_per_step'] == finetune_step_flops(spec)
    assert result['ours_over_timm'] > 0 and result['clock'] == 'process cpu' and result['target'] == 1.02
    assert set(result['ratio']) == {'ratio_of_medians', 'median_of_ratios'} and result['threads'] == 1
    assert len(result['load_avg_before']) == 3
    assert 'ours / timm: x' in format_step(result)
    json.dumps(result)


def test_finetune_step_flops_of_vit_b16_at_224():
    from sdae_suite.benchmarks.finetune_speed import FinetuneSpec, finetune_step_flops

    per_image = finetune_step_flops(FinetuneSpec(batch=1))
    forward = vit_forward_flops(197, 768, 12) + 2 * 196 * 768 * 768 + 2 * 768 * 1000
    assert forward == pytest.approx(2 * 17.56e9, rel=2e-3)  # ViT-B/16: ~17.6 GMACs per image
    assert per_image == 3 * forward - 2 * 196 * 768 * 768


def test_ours_and_timm_compute_the_same_function():
    from sdae_suite.benchmarks.finetune_speed import FinetuneSpec, build_ours, build_timm, copy_weights

    spec = FinetuneSpec(size='test', img_size=48, patch_size=16, num_classes=10, batch=4)
    torch.manual_seed(0)
    ours, ref = build_ours(spec).eval(), build_timm(spec).eval()
    with torch.no_grad():  # non-trivial head and norms (the recipe's head init is ~0)
        for m in (ours.head, ours.fc_norm):
            m.weight.normal_(std=0.5), m.bias.normal_(std=0.5)
    copy_weights(ours, ref)
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == (3, 10) and a.abs().max() > 0.1
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_one_training_step_is_the_same_for_ours_and_timm():
    """Mixup, drop path, loss, gradients and the layer-decay AdamW update: the two steps do the same thing."""
    from sdae_suite.benchmarks.finetune_speed import (
        OURS,
        REFERENCE,
        FinetunePair,
        FinetuneSpec,
        copy_weights,
        param_settings,
    )

    pair = FinetunePair(FinetuneSpec(**FT_TINY))
    ours, ref = pair.steppers[OURS], pair.steppers[REFERENCE]
    with torch.no_grad():  # a head that lets the loss depend on the encoder (the recipe's head init is ~0)
        ours.model.head.weight.normal_(std=0.5)
    copy_weights(ours.model, ref.model)
    assert param_settings(ours.optimizer, ours.model, 'backbone.') == param_settings(ref.optimizer, ref.model)
    for seed in (2, 3):  # seed 2 draws cutmix, seed 3 mixup (numpy); drop path masks (torch)
        pair.run(OURS, seed)
        pair.run(REFERENCE, seed)
        assert float(ours.last_loss) == pytest.approx(float(ref.last_loss), abs=1e-5)
    after = ref.model.state_dict()
    for name, value in ours.model.state_dict().items():
        assert torch.allclose(value, after[name.removeprefix('backbone.')], atol=1e-5, rtol=0), name


def test_workers_estimate_arithmetic():
    from sdae_suite.benchmarks.finetune_speed import workers_needed

    w = workers_needed(gpu_img_per_s=1000, worker_img_per_s=120, gpus=8)
    assert (w['workers_per_gpu'], w['workers_per_node'], w['node_img_per_s']) == (9, 72, 8000)
    assert w['workers_exact'] == pytest.approx(8000 / 120)
    assert workers_needed(1000, 125)['workers_per_gpu'] == 8  # an exact fit needs no extra worker
    assert workers_needed(1000, 125, gpus=4)['workers_per_node'] == 32
    with pytest.raises(ValueError):
        workers_needed(1000, 0)


def test_pipeline_throughput_on_generated_imagenet_sized_jpegs(tmp_path):
    from PIL import Image

    from sdae_suite.benchmarks.finetune_speed import make_jpegs, pipeline_throughput, recipe_transform

    paths = make_jpegs(tmp_path, 4)
    assert [Image.open(p).size for p in paths] == [(500, 375)] * 4
    assert all(90_000 < p.stat().st_size < 130_000 for p in paths)  # ImageNet's mean JPEG is ~110 KB
    transform = recipe_transform()
    assert transform['type'] == 'finetune' and transform['auto_augment'] == 'rand-m9-mstd0.5-inc1'
    r = pipeline_throughput(tmp_path, rounds=1, warmup=1, transform=transform, log=lambda m: None)
    assert r['images'] == 4 and r['output_shape'] == [3, 224, 224] and r['img_per_s'] > 0 and r['ms_per_img'] > 0
    assert torch.get_num_threads() >= 1
    json.dumps(r)


def test_finetune_command_writes_the_json(tmp_path):
    from sdae_suite.commands.benchmark_speed import main

    out = tmp_path / 'ft.json'
    main(['--finetune', '--size', 'test', '--img-size', '32', '--patch-size', '8', '--batch', '4', '--num-classes',
          '10', '--repeats', '1', '--warmup', '1', '--threads', '1', '--pipeline-images', '4', '--pipeline-rounds', '1',
          '--gpu-img-per-s', '1000', '2000', '--device', 'cpu', '--out', str(out)])
    result = json.loads(out.read_text())
    assert set(result) >= {'step', 'pipeline', 'workers', 'gpu_img_per_s_source', 'config'}
    assert result['step']['ours_over_timm'] > 0 and result['pipeline']['img_per_s'] > 0
    assert [w['gpu_img_per_s'] for w in result['workers']] == [1000, 2000]
    assert result['workers'][0]['workers_per_node'] == 8 * result['workers'][0]['workers_per_gpu']


def test_tier1_finetune_step_check_runs_on_cpu_at_tiny_size():
    checks, figures = gpu_check.check_finetune_step(batch=4, device='cpu', rounds=1, warmup=1, peak_n=256, **{
        k: v for k, v in FT_TINY.items() if k != 'batch'})
    assert [c.name for c in checks] == ['fine-tune step, batch 4', 'fine-tune step ours / timm']
    assert checks[0].ok and 'MFU' in checks[0].figure and 'target <= 1.02' in checks[1].figure
    assert figures['peak_source'] == 'measured matmul' and figures['models']['sdae_cls']['mfu'] > 0
    json.dumps(figures)


def test_pipeline_counts_samples_whose_transform_raises(tmp_path, monkeypatch):
    from sdae_suite.benchmarks.finetune_speed import format_pipeline, make_jpegs, pipeline_throughput, workers_needed
    from sdae_suite.classification.dataset import SdAEImageFolder

    make_jpegs(tmp_path, 4)
    getitem = SdAEImageFolder.__getitem__

    def flaky(self, index):
        if index == 2:
            raise ValueError('bits must be between or equal to 1 and 8')
        return getitem(self, index)

    monkeypatch.setattr(SdAEImageFolder, '__getitem__', flaky)
    r = pipeline_throughput(tmp_path, rounds=2, warmup=0, transform=dict(type='eval'), log=lambda m: None)
    assert r['transform_errors'] == {'ValueError: bits must be between or equal to 1 and 8': 2} and r['samples'] == 8
    assert 'WARNING: the transform raised on 2 of 8 samples' in format_pipeline(r, [workers_needed(1000, 100)])

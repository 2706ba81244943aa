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

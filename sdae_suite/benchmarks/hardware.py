"""What a machine can do, for MFU figures: known dense peaks by GPU name, a measured matmul peak, FLOP counting."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets (SXM / PCIe / NVL as named).
# Ordered most specific first: the first substring found in torch.cuda.get_device_name() wins.
BF16_DENSE_PEAK_TFLOPS: list[tuple[str, float]] = [
    ('H100 PCIe', 756.0),
    ('H100 NVL', 835.0),
    ('H100', 989.4),      # SXM
    ('H200 NVL', 835.0),
    ('H200', 989.4),      # SXM
    ('GH200', 989.4),
    ('B200', 2250.0),
    ('A100', 312.0),
    ('L40S', 362.0),
    ('L40', 181.0),
    ('L4', 121.0),
]


def known_bf16_peak(device_name: str) -> tuple[float, str] | None:
    """(peak FLOP/s, the table entry it came from) for a device name, or None when the table does not know it."""
    for key, tflops in BF16_DENSE_PEAK_TFLOPS:
        if key in device_name:
            return tflops * 1e12, key
    return None


def mfu(flops_per_step: float, step_time_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak."""
    return flops_per_step / step_time_s / peak_flops


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measured_matmul_peak(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None,
                         repeats: int = 7) -> float:
    """Median FLOP/s of square matmuls (fp32 on CPU, bf16 on GPU: the precisions the steps use). The median, not the
    best: one lucky round on a shared machine would flatter the peak and make every MFU look worse."""
    dtype = dtype or (torch.bfloat16 if device.type == 'cuda' else torch.float32)
    n = n or (8192 if device.type == 'cuda' else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: kernel selection, allocations
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward + backward if it does both), with attention counted: FlopCounterMode does
    not see the fused SDPA kernels, so attention runs on the math backend while counting (same FLOPs, by definition)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def vit_forward_flops(tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> int:
    """Closed form of a ViT encoder's forward FLOPs on ``tokens`` tokens (2 FLOPs per multiply-accumulate): per block
    qkv 3·L·D², attention scores and weighted sum 2·L²·D, projection L·D², MLP 2·r·L·D²."""
    mac = depth * (3 * tokens * dim**2 + 2 * tokens**2 * dim + tokens * dim**2 + 2 * mlp_ratio * tokens * dim**2)
    return int(2 * mac)

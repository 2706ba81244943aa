"""What a user runs when something is off (`make doctor`): versions, compiled ops, devices, the fix for each failure.

Exit code 0 when everything the suite needs works, 1 otherwise. `--json FILE` also writes the report as JSON.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import warnings
from pathlib import Path

from sdae_suite import REPO_ROOT

# mmengine imports pkg_resources; its deprecation notice is not something the user can act on.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

ROOT = REPO_ROOT
REINSTALL = 'rm -f .venv/.sdae-install-stamp && make install'


def read_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / 'requirements.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if '==' in line:
            name, ver = line.split('==', 1)
            pins[name.strip().lower()] = ver.strip()
    return pins


def check_version(dist: str, module: str, pins: dict[str, str]) -> tuple[bool, str, str]:
    """(ok, found, fix) for one pinned distribution."""
    from importlib.metadata import PackageNotFoundError, version

    want = pins.get(dist)
    try:
        importlib.import_module(module)
        found = version(dist)
    except PackageNotFoundError:
        return False, 'not installed', f'{REINSTALL}   (installs {dist}=={want})'
    except Exception as e:  # an import that fails for another reason must still be reported, not crash the doctor
        return False, f'import failed: {type(e).__name__}: {e}', f'{REINSTALL}'
    if want and found != want:
        return False, found, f'.venv/bin/python -m pip install {dist}=={want}   (requirements.txt pins {want})'
    return True, found, ''


def check_mmcv_ops() -> tuple[bool, str, str]:
    try:
        import torch
        from mmcv.ops import RoIAlign, nms

        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
        roi = RoIAlign((2, 2), 1.0, 2)(torch.full((1, 1, 8, 8), 3.0), torch.tensor([[0.0, 1, 1, 5, 5]]))
        ok = keep.tolist() == [0, 2] and torch.allclose(roi, torch.tensor(3.0))
        return ok, 'nms, RoIAlign: ok' if ok else 'ops load but give wrong results', '' if ok else REINSTALL
    except Exception as e:
        return False, f'{type(e).__name__}: {e}', (
            'mmcv was installed without its compiled ops (e.g. a `pip install mmcv` that fell back to mmcv-lite). '
            f'Fix: .venv/bin/python -m pip uninstall -y mmcv && {REINSTALL}   (builds mmcv 2.1.0 with MMCV_WITH_OPS=1)')


def check_safe_loading() -> tuple[bool, str, str]:
    try:
        from mmengine.runner import CheckpointLoader

        import sdae_suite.engine.checkpoint_io as cio

        cio.install_safe_checkpoint_io()  # what every command does; is every scheme mmengine knows gated after it?
        if not cio.is_installed():
            unknown = sorted(p for p, f in CheckpointLoader._schemes.items() if f.__module__ != cio.__name__)
            return False, f'checkpoint schemes not routed through the gate: {unknown}', \
                'a library imported here registered them after the suite; report it with this output'
        return True, f'weights_only loading with {len(cio.ALLOWED_GLOBALS)} allow-listed types, every scheme gated', ''
    except Exception as e:
        return False, f'{type(e).__name__}: {e}', f'the suite or its stack is not installed here: {REINSTALL}'


def devices() -> dict[str, object]:
    import torch

    info: dict[str, object] = {'cpu_threads': torch.get_num_threads(), 'cuda_available': torch.cuda.is_available(),
                               'cuda_build': torch.version.cuda}
    if torch.cuda.is_available():
        info['gpus'] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info['bf16_supported'] = torch.cuda.is_bf16_supported()
        try:
            from mmcv.ops import nms

            b = torch.tensor([[0.0, 0, 10, 10]], device='cuda')
            nms(b, torch.tensor([1.0], device='cuda'), 0.5)
            info['mmcv_cuda_ops'] = True
        except Exception as e:
            info['mmcv_cuda_ops'] = f'no ({type(e).__name__}): rebuild with nvcc on PATH: {REINSTALL}'
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--json', help='also write the report to this JSON file')
    args = parser.parse_args()
    pins = read_pins()
    checks: dict[str, tuple[bool, str, str]] = {}
    in_venv = Path(sys.prefix).resolve() == (ROOT / '.venv').resolve()
    checks['python'] = (sys.version_info[:2] == (3, 11), platform.python_version(),
                        'use Python 3.11: PYTHON=/path/to/python3.11 make install')
    checks['virtualenv'] = (in_venv, sys.prefix, 'run through make (make doctor) or with .venv/bin/python')
    for dist, module in [('torch', 'torch'), ('torchvision', 'torchvision'), ('numpy', 'numpy'),
                         ('mmengine', 'mmengine'), ('mmcv', 'mmcv'), ('mmdet', 'mmdet'),
                         ('mmsegmentation', 'mmseg'), ('timm', 'timm'), ('pycocotools', 'pycocotools'),
                         ('opencv-python', 'cv2'), ('setuptools', 'pkg_resources'), ('ftfy', 'ftfy'),
                         ('regex', 'regex'), ('matplotlib', 'matplotlib')]:
        checks[dist] = check_version(dist, module, pins)
    checks['mmcv compiled ops'] = check_mmcv_ops()
    checks['checkpoint safety'] = check_safe_loading()
    if os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        checks['weights_only protection'] = (
            False, 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: every torch.load can run code from the file',
            'unset TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (the suite allow-lists what mmengine checkpoints need)')
    try:
        dev = devices()
    except Exception as e:
        dev = {'error': f'{type(e).__name__}: {e}'}

    width = max(map(len, checks)) + 2
    print('SdAE suite environment report')
    for name, (ok, found, fix) in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<{width}} {found}")
        if not ok:
            print(f"       {'':<{width}} fix: {fix}")
    print('  devices: ' + ', '.join(f'{k}={v}' for k, v in dev.items()))
    if not dev.get('cuda_available'):
        print('  note: no GPU visible; everything runs on CPU (fp32). On a GPU machine rerun `make install` with nvcc '
              'on PATH to build mmcv with CUDA ops.')
    failed = [n for n, (ok, _, _) in checks.items() if not ok]
    print('All checks passed.' if not failed else f'{len(failed)} check(s) failed: {", ".join(failed)}')
    if args.json:
        from sdae_suite.engine.atomic import atomic_write_json

        atomic_write_json({'checks': {n: {'ok': ok, 'found': f, 'fix': fix} for n, (ok, f, fix) in checks.items()},
                           'devices': dev, 'ok': not failed}, args.json)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Pretraining step cost of SdAE, MAE and SdAE with a full-image teacher, measured in ONE run, interleaved
(sdae_suite/benchmarks/speed.py says what a step is and how each column is measured); with ``--finetune``, the ImageNet
fine-tuning step of our classifier against timm's ViT and the training data pipeline's images/s per worker
(sdae_suite/benchmarks/finetune_speed.py).

    python tools/benchmark_speed.py [--size base] [--img-size 224] [--batch 8] [--repeats 5] [--threads 1]
                                    [--optimizers fused foreach] [--out work_dirs/benchmark_speed.json]
    python tools/benchmark_speed.py --finetune [--size base] [--batch 8] [--repeats 10] [--warmup 2] [--threads 2]
                                    [--pipeline-images 256] [--gpu-img-per-s 1000] [--gpus-per-node 8]
                                    [--skip-step | --skip-pipeline] [--out work_dirs/benchmark_finetune.json]

On a GPU the step runs under bf16 autocast with PyTorch's fused attention (SDPA). Targets: SdAE / MAE step-time
ratio <= their FLOP ratio (~1.45 at ViT-B/16, mask 0.75); `--optimizers fused foreach` shows what the fused AdamW
(the configs' default) saves per step. Fine-tuning: ours / timm step time <= 1.02; the workers estimate takes the
per-GPU training throughput from `--gpu-img-per-s` (default 1000 img/s, an assumption for an H100-class GPU at bf16;
`make gpu-check` measures it).
"""
from __future__ import annotations

import argparse

import torch

from sdae_suite.benchmarks.speed import OPTIMIZERS, SIZES, VARIANTS, StepSpec, format_table, measure, save


def parse_args(argv=None) -> argparse.Namespace:
    from sdae_suite.benchmarks.finetune_speed import DEFAULT_GPU_IMG_PER_S, GPUS_PER_NODE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--finetune', action='store_true',
                   help='the fine-tuning benchmark (ours vs timm step, data pipeline) instead of pretraining')
    p.add_argument('--size', choices=SIZES, default='base')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--patch-size', type=int, default=16)
    p.add_argument('--decoder', default='8x512x16', help='depth x width x heads (pretraining)')
    p.add_argument('--mask-ratio', type=float, default=0.75, help='pretraining')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--repeats', type=int, help='timed rounds; each round times every variant / model once '
                                               '(default 5; 10 with --finetune)')
    p.add_argument('--steps', type=int, default=2, help='steps per variant per round (pretraining)')
    p.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS), help='pretraining')
    p.add_argument('--optimizers', nargs='+', choices=OPTIMIZERS, default=['fused'],
                   help='AdamW implementations to compare (each variant is timed with each; pretraining)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='CPU threads (default: torch default; 1 is steadier on a busy machine)')
    p.add_argument('--out', help='JSON results (default work_dirs/benchmark_speed.json, or '
                                 'work_dirs/benchmark_finetune.json with --finetune)')
    ft = p.add_argument_group('fine-tuning (--finetune)')
    ft.add_argument('--warmup', type=int, default=2, help='untimed rounds before the timed ones')
    ft.add_argument('--num-classes', type=int, default=1000)
    ft.add_argument('--drop-path', type=float, default=0.1)
    ft.add_argument('--skip-step', action='store_true', help='only the data pipeline')
    ft.add_argument('--skip-pipeline', action='store_true', help='only the ours / timm step')
    ft.add_argument('--pipeline-images', type=int, default=256, help='JPEGs generated for the pipeline measurement')
    ft.add_argument('--pipeline-rounds', type=int, default=3, help='passes over the JPEGs (median)')
    ft.add_argument('--pipeline-root', help='ImageNet-format folder (with train/) to read instead of generated JPEGs')
    ft.add_argument('--gpu-img-per-s', type=float, nargs='+', default=[DEFAULT_GPU_IMG_PER_S],
                    help='per-GPU fine-tuning throughput(s) to size the workers for (default %(default)s: an '
                         'assumption for an H100-class GPU at bf16, ViT-B/16; `make gpu-check` measures it)')
    ft.add_argument('--gpus-per-node', type=int, default=GPUS_PER_NODE)
    return p.parse_args(argv)


def main_finetune(args: argparse.Namespace) -> dict:
    from sdae_suite.benchmarks import finetune_speed as ft

    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    result: dict = dict(config=vars(args))
    if not args.skip_step:
        spec = ft.FinetuneSpec(size=args.size, img_size=args.img_size, patch_size=args.patch_size,
                               num_classes=args.num_classes, batch=args.batch, device=args.device,
                               dtype='bf16' if args.device.startswith('cuda') else 'fp32',
                               drop_path_rate=args.drop_path)
        print(f'[bench-ft] ViT-{args.size}/{args.patch_size} at {args.img_size}, batch {args.batch}, device '
              f'{args.device} ({torch.get_num_threads()} threads, {spec.dtype}), {args.warmup} warm-up + '
              f'{args.repeats} rounds, ours vs timm interleaved', flush=True)
        result['step'] = ft.measure(spec, rounds=args.repeats, warmup=args.warmup, log=log)
        print('\n' + ft.format_step(result['step']))
    if not args.skip_pipeline:
        print(f'\n[bench-data] {args.pipeline_root or f"{args.pipeline_images} generated JPEGs"}, '
              f'{args.pipeline_rounds} passes', flush=True)
        pipe = ft.pipeline_throughput(args.pipeline_root, num_images=args.pipeline_images,
                                      rounds=args.pipeline_rounds, log=log)
        estimates = [ft.workers_needed(g, pipe['img_per_s'], args.gpus_per_node) for g in args.gpu_img_per_s]
        result.update(pipeline=pipe, workers=estimates,
                      gpu_img_per_s_source='--gpu-img-per-s' if args.gpu_img_per_s != [ft.DEFAULT_GPU_IMG_PER_S]
                      else 'default: an assumption for an H100-class GPU at bf16 (see finetune_speed.py)')
        print('\n' + ft.format_pipeline(pipe, estimates))
    print(f"[bench-ft] wrote {save(result, args.out or 'work_dirs/benchmark_finetune.json')}")
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.repeats is None:
        args.repeats = 10 if args.finetune else 5
    if args.finetune:
        return main_finetune(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = 'bf16' if args.device.startswith('cuda') else 'fp32'
    specs = [StepSpec(variant=v, size=args.size, img_size=args.img_size, patch_size=args.patch_size,
                      decoder=args.decoder, mask_ratio=args.mask_ratio, batch=args.batch, device=args.device,
                      dtype=dtype, optimizer=o) for v in args.variants for o in args.optimizers]
    print(f'[bench] ViT-{args.size}/{args.patch_size} at {args.img_size}, decoder {args.decoder}, mask '
          f'{args.mask_ratio}, batch {args.batch}, device {args.device} ({torch.get_num_threads()} threads, {dtype}), '
          f'{args.repeats} rounds x {args.steps} steps, {[s.label for s in specs]}', flush=True)
    result = measure(specs, args.repeats, args.steps, args.threads, log=lambda m: print(m, flush=True))
    result['config'] = vars(args)
    print('\n' + format_table(result))
    print(f"[bench] wrote {save(result, args.out or 'work_dirs/benchmark_speed.json')}")
    return result


if __name__ == '__main__':
    main()

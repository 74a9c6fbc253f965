"""Inference latency and throughput of segmentors built from configs.

Times ``model.encode_decode`` (backbone, head and the resize of the logits
to the input size, i.e. mmseg's 'whole' inference without pre/post-processing)
under ``torch.no_grad`` on random inputs; prints median/min/max seconds per batch
and images per second. Uses CUDA when available unless ``--device cpu``.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...] \
        [--shape 512 512] [--batch 1] [--threads 2] [--runs 10] [--warmup 3]
"""
import argparse
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args()


def build(config: str, device: str) -> torch.nn.Module:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    if device == 'cpu':
        model = revert_sync_batchnorm(model)
    return model.to(device).eval()


def time_model(model, inputs, runs: int, warmup: int) -> list:
    sync = torch.cuda.synchronize if inputs.is_cuda else (lambda: None)
    metas = [dict(img_shape=inputs.shape[-2:])] * len(inputs)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            model.encode_decode(inputs, metas)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'device={args.device} threads={torch.get_num_threads()} '
          f'input={args.batch}x3x{args.shape[0]}x{args.shape[1]} '
          f'runs={args.runs} warmup={args.warmup} torch={torch.__version__}')
    for config in args.configs:
        model = build(config, args.device)
        inputs = torch.randn(args.batch, 3, *args.shape, device=args.device)
        times = time_model(model, inputs, args.runs, args.warmup)
        median = statistics.median(times)
        print(f'{config}: median {median:.4f}s min {min(times):.4f}s '
              f'max {max(times):.4f}s -> {args.batch / median:.2f} img/s')


if __name__ == '__main__':
    main()

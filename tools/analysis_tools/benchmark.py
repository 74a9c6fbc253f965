"""Speed and peak memory of segmentors built from configs.

For every config × mode × precision, a fresh process builds the model and
times ``--runs`` iterations after ``--warmup``:

* ``infer``: ``model.encode_decode`` under ``torch.no_grad`` (backbone, head
  and the resize of the logits to the input, i.e. mmseg's 'whole' inference
  without pre/post-processing) -> images/s;
* ``train``: forward with the loss, backward and the config's optimizer step
  on random labels -> iterations/s.

Precision ``bf16`` is bfloat16 autocast (CPUAmpOptimWrapper on CPU), ``fp16``
is CUDA AMP (AmpOptimWrapper). Peak memory is the process's peak resident
set on CPU and ``torch.cuda.max_memory_allocated`` on CUDA. The figures are
printed, not asserted: put them in notes with the machine they came from.

``--keep-heap`` runs the measured processes with ``GLIBC_TUNABLES`` set so
that glibc's malloc keeps freed memory in its heap (mmap threshold 32 MiB,
no trimming). With the defaults, whether glibc hands the large activation
buffers back to the kernel after every forward (and page-faults them in
again on the next one) depends on the process's allocation history (measured
on a 2-vCPU VM: up to 15 % on a CGRSeg-L forward at 512²; see
docs/porting.md). The same variable works for any command
(``tools/test.py``, a deployment server).

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...]
        [--mode infer train] [--precision fp32 bf16] [--shape 512 512]
        [--batch 1] [--threads 2] [--runs 10] [--warmup 3] [--device cpu]
        [--keep-heap]
"""
import argparse
import os
import os.path as osp
import statistics
from contextlib import nullcontext

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from measuring import peak_memory_mib, run_in_fresh_process, time_steps

AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
KEEP_HEAP_TUNABLES = ('glibc.malloc.mmap_threshold=33554432:'
                      'glibc.malloc.trim_threshold=4294967296')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument(
        '--mode', nargs='+', choices=['infer', 'train'], default=['infer'])
    parser.add_argument(
        '--precision', nargs='+', choices=list(AUTOCAST), default=['fp32'])
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--keep-heap', action='store_true',
        help=f'measure with GLIBC_TUNABLES={KEEP_HEAP_TUNABLES} (glibc '
        f'keeps freed activation memory instead of returning it to the '
        f'kernel after every forward)')
    return parser.parse_args()


def build_model(config: str, device: str) -> torch.nn.Module:
    import cgrseg  # noqa: F401
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    if device == 'cpu':
        model = revert_sync_batchnorm(model)
    return model.to(device), cfg


def make_step(model, cfg, mode: str, precision: str, args):
    device = args.device
    inputs = torch.randn(args.batch, 3, *args.shape, device=device)
    dtype = AUTOCAST[precision]
    autocast = (lambda: torch.autocast(device.split(':')[0], dtype=dtype)
                ) if dtype else nullcontext
    if mode == 'infer':
        model.eval()
        metas = [dict(img_shape=tuple(args.shape))] * args.batch

        def step():
            with torch.no_grad(), autocast():
                model.encode_decode(inputs, metas)

        return step
    model.train()
    num_classes = model.decode_head.num_classes
    samples = []
    for _ in range(args.batch):
        sample = SegDataSample(metainfo=dict(img_shape=tuple(args.shape)))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, *args.shape), device=device))
        samples.append(sample)
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.type = 'OptimWrapper'
    if precision == 'fp16':
        optim_cfg.type, optim_cfg.loss_scale = 'AmpOptimWrapper', 'dynamic'
    optim_wrapper = build_optim_wrapper(model, optim_cfg)

    def step():
        with autocast():
            losses = model.loss(inputs, samples)
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)

    return step


def measure(config: str, mode: str, precision: str, args, queue) -> None:
    # The optimizer constructor logs every parameter's options at INFO.
    MMLogger.get_instance('benchmark', log_level='WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = build_model(config, args.device)
    step = make_step(model, cfg, mode, precision, args)
    cuda = args.device.startswith('cuda')
    times = time_steps(step, args.runs, args.warmup, cuda)
    peak_mb = peak_memory_mib(cuda)
    queue.put((times, peak_mb))


def main() -> None:
    args = parse_args()
    if args.keep_heap:
        # Read by glibc when a process starts: the spawned children see it.
        os.environ['GLIBC_TUNABLES'] = KEEP_HEAP_TUNABLES
    print(f'device={args.device} threads={args.threads or "default"} '
          f'input={args.batch}x3x{args.shape[0]}x{args.shape[1]} '
          f'runs={args.runs} warmup={args.warmup} torch={torch.__version__} '
          f'GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")!r}')
    for config in args.configs:
        for mode in args.mode:
            for precision in args.precision:
                times, peak_mb = run_in_fresh_process(
                    measure, config, mode, precision, args)
                median = statistics.median(times)
                unit = 'img/s' if mode == 'infer' else 'iter/s'
                rate = (args.batch if mode == 'infer' else 1) / median
                print(f'{osp.basename(config)} {mode} {precision}: '
                      f'median {median:.4f}s (min {min(times):.4f}, max '
                      f'{max(times):.4f}) -> {rate:.2f} {unit}, peak memory '
                      f'{peak_mb:.0f} MiB')


if __name__ == '__main__':
    main()

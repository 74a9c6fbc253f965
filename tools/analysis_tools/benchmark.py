"""Speed and peak memory of segmentors in PyTorch, torch.compile and ONNX
Runtime.

Every case (config × mode × precision × backend × output) runs in a fresh
process, which builds the model and times ``--runs`` calls after
``--warmup``. With ``--rounds N`` all cases run N times, interleaved (case
1, 2, ..., 1, 2, ...), and each figure is the median over all rounds.

Modes:

* ``infer``: one image batch to ``--output`` (``logits`` at the input size,
  or ``labels``) -> images/s. Backends:

  - ``pytorch``: mmseg's ``encode_decode`` (backbone, head, resize of the
    logits to the input), plus ``argmax`` for labels;
  - ``deploy``: eager :class:`cgrseg.deploy.DeploySegmentor` (normalisation
    and padding inside; labels without full-resolution logits);
  - ``compile``: ``torch.compile(DeploySegmentor, fullgraph=True)`` at the
    fixed size (compiled during the warm-up);
  - ``onnxruntime``: the DeploySegmentor exported to ONNX at the fixed
    size (in its own process first; the export's time is printed) and run
    by ONNX Runtime on CPU, in a process that does not use PyTorch;
  - ``onnxruntime-dynamic``: the same, exported with ``--dynamic-shape``
    (any input size), as the README and the own-data guide export it;
  - ``onnxruntime-int8``: the same file quantized to int8 by ONNX Runtime
    (static, calibrated on ``--calib-dir`` images, by default on random
    ones: the speed does not depend on the calibration).

  ``--onnx-file BACKEND=PATH`` measures a file exported before (by
  ``tools/deployment/pytorch2onnx.py``, with its checks and your weights)
  for that backend instead of exporting one; only its ``--output`` is
  fetched.

* ``train``: forward with the loss, backward and the config's optimizer
  step on random labels -> iterations/s (backends ``pytorch`` and
  ``compile``).

Precision ``bf16`` is bfloat16 autocast (CPUAmpOptimWrapper on CPU), ``fp16``
CUDA AMP; ONNX Runtime runs fp32 only. Peak memory is the process's peak
resident set on CPU, with how much of it the calls added over the built
model (``+N while timed``: warm-up and timed calls), and
``torch.cuda.max_memory_allocated`` on CUDA. Configs may be files or
``mmseg::<path>`` (e.g. ``mmseg::segnext/segnext_mscan-t_1xb16-adamw-160k_
ade20k-512x512.py``). The figures are printed, not asserted: put them in
notes with the machine they came from.

``--keep-heap`` runs the measured processes with ``GLIBC_TUNABLES`` set so
that glibc's malloc keeps freed memory in its heap (mmap threshold 32 MiB,
no trimming). With the defaults, whether glibc hands the large activation
buffers back to the kernel after every forward (and page-faults them in
again on the next one) depends on the process's allocation history (measured
on a 2-vCPU VM: up to 15 % on a CGRSeg-L forward at 512²; see
docs/porting.md). The same variable works for any command.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...]
        [--mode infer train]
        [--backend pytorch deploy compile onnxruntime onnxruntime-dynamic
                   onnxruntime-int8]
        [--output logits labels] [--precision fp32 bf16] [--shape 512 512]
        [--batch 1] [--threads 2] [--runs 10] [--warmup 3] [--rounds 1]
        [--calib-dir DIR] [--onnx-file BACKEND=PATH ...] [--device cpu]
        [--keep-heap]
"""
import argparse
import itertools
import os
import os.path as osp
import statistics
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, NamedTuple

import torch

from measuring import (current_memory_mib, peak_memory_mib,
                       run_in_fresh_process, time_steps)

AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
KEEP_HEAP_TUNABLES = ('glibc.malloc.mmap_threshold=33554432:'
                      'glibc.malloc.trim_threshold=4294967296')
INFER_BACKENDS = ('pytorch', 'deploy', 'compile', 'onnxruntime',
                  'onnxruntime-dynamic', 'onnxruntime-int8')
ONNX_BACKENDS = ('onnxruntime', 'onnxruntime-dynamic', 'onnxruntime-int8')
TRAIN_BACKENDS = ('pytorch', 'compile')


class Case(NamedTuple):
    config: str
    mode: str
    precision: str
    backend: str
    output: str

    def label(self) -> str:
        what = self.output if self.mode == 'infer' else ''
        return (f'{osp.basename(self.config)} {self.mode} {self.precision} '
                f'{self.backend} {what}').rstrip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        'configs', nargs='+', help='config files or mmseg::<path> configs')
    parser.add_argument(
        '--mode', nargs='+', choices=['infer', 'train'], default=['infer'],
        help='infer: image -> output; train: one optimizer step')
    parser.add_argument(
        '--backend', nargs='+', choices=INFER_BACKENDS,
        default=['pytorch'], help='runtimes to measure (see above)')
    parser.add_argument(
        '--output', nargs='+', choices=['logits', 'labels'],
        default=['logits'], help='what inference returns')
    parser.add_argument(
        '--calib-dir',
        help='int8 calibration images (default: random images)')
    parser.add_argument(
        '--precision', nargs='+', choices=list(AUTOCAST), default=['fp32'],
        help='autocast dtype (PyTorch backends)')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=[512, 512],
        metavar=('H', 'W'), help='input size')
    parser.add_argument('--batch', type=int, default=1, help='batch size')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='intra-op threads (default: the runtime default)')
    parser.add_argument(
        '--runs', type=int, default=10, help='timed calls per process')
    parser.add_argument(
        '--warmup', type=int, default=3,
        help='untimed calls before them (compilation happens here)')
    parser.add_argument(
        '--rounds', type=int, default=1,
        help='run every case this many times, interleaved')
    parser.add_argument(
        '--onnx-file', nargs='+', default=[], metavar='BACKEND=PATH',
        help='measure this exported file for an ONNX backend instead of '
        'exporting one (one config only)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu',
        help='device of the PyTorch backends')
    parser.add_argument(
        '--keep-heap', action='store_true',
        help=f'measure with GLIBC_TUNABLES={KEEP_HEAP_TUNABLES} (glibc '
        f'keeps freed activation memory instead of returning it to the '
        f'kernel after every forward)')
    args = parser.parse_args()
    args.given_onnx = given_onnx_files(parser, args)
    return args


def given_onnx_files(parser: argparse.ArgumentParser,
                     args: argparse.Namespace) -> Dict[str, str]:
    """``--onnx-file BACKEND=PATH`` entries as {backend: path}, checked."""
    given = {}
    for entry in args.onnx_file:
        backend, _, path = entry.partition('=')
        if backend not in ONNX_BACKENDS or not path:
            parser.error(f'--onnx-file {entry!r}: expected BACKEND=PATH with '
                         f'BACKEND one of {", ".join(ONNX_BACKENDS)}.')
        if backend not in args.backend:
            parser.error(f'--onnx-file {entry!r}: {backend} is not among '
                         f'--backend {" ".join(args.backend)}.')
        if not osp.isfile(path):
            parser.error(f'--onnx-file {entry!r}: no such file.')
        given[backend] = path
    if given and len(args.configs) > 1:
        parser.error('--onnx-file: give one config (the file is measured '
                     'for it).')
    return given


def cases(args: argparse.Namespace) -> List[Case]:
    """Every valid combination, in the order given on the command line."""
    found = []
    for config, mode, precision, backend, output in itertools.product(
            args.configs, args.mode, args.precision, args.backend,
            args.output):
        if mode == 'train' and (backend not in TRAIN_BACKENDS
                                or output != args.output[0]):
            continue
        if backend in ONNX_BACKENDS and precision != 'fp32':
            continue
        found.append(Case(config, mode, precision, backend, output))
    if not found:
        raise SystemExit('benchmark.py: no case to measure: training runs '
                         'on the pytorch/compile backends only, ONNX '
                         'Runtime in fp32 only.')
    return found


def build_segmentor(config: str, device: str) -> torch.nn.Module:
    from cgrseg.apis import init_segmentor
    return init_segmentor(config).to(device)


def random_images(args: argparse.Namespace) -> torch.Tensor:
    """A batch of BGR images with pixel values 0-255."""
    return torch.rand(args.batch, 3, *args.shape) * 255


def autocast_context(args, precision: str) -> Callable:
    dtype = AUTOCAST[precision]
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(args.device.split(':')[0], dtype=dtype)


def pytorch_infer_step(case: Case, args) -> Callable[[], None]:
    """mmseg's whole inference on normalised inputs, argmax for labels."""
    model = build_segmentor(case.config, args.device)
    inputs = torch.randn(args.batch, 3, *args.shape, device=args.device)
    metas = [dict(img_shape=tuple(args.shape))] * args.batch
    autocast = autocast_context(args, case.precision)

    def step():
        with torch.no_grad(), autocast():
            logits = model.encode_decode(inputs, metas)
            if case.output == 'labels':
                logits.argmax(dim=1)

    return step


def deploy_model(case: Case, args) -> torch.nn.Module:
    from cgrseg.deploy import DeploySegmentor
    return DeploySegmentor(
        build_segmentor(case.config, args.device), outputs=(case.output, ))


def deploy_infer_step(case: Case, args, compile_model: bool = False):
    model = deploy_model(case, args)
    if compile_model:
        model = torch.compile(model, fullgraph=True, dynamic=False)
    images = random_images(args).to(args.device)
    autocast = autocast_context(args, case.precision)

    def step():
        with torch.no_grad(), autocast():
            model(images)

    return step


def export_for_onnxruntime(case: Case, args, path: str, queue) -> None:
    """Runs in its own process: PyTorch never shares one with ONNX
    Runtime here, so neither disturbs the other's thread pool."""
    from cgrseg.deploy.onnx_export import export_onnx
    export_onnx(deploy_model(case, args), path, tuple(args.shape),
                dynamic_shape=case.backend == 'onnxruntime-dynamic')
    if case.backend == 'onnxruntime-int8':
        from cgrseg.deploy.quantize import quantize_int8
        calib_dir = args.calib_dir or write_random_images(
            osp.dirname(path), args.shape)
        quantize_int8(path, path, calib_dir, tuple(args.shape))
    queue.put(path)


def onnx_input_shape(path: str) -> str:
    """The file's input dimensions, e.g. ``batchx3x512x512``, or with
    symbolic height and width for a dynamic-shape file."""
    import onnx
    dims = onnx.load(path, load_external_data=False).graph.input[0].type \
        .tensor_type.shape.dim
    return 'x'.join(d.dim_param or str(d.dim_value) for d in dims)


def write_random_images(folder: str, shape, count: int = 4) -> str:
    import cv2
    import numpy as np
    folder = osp.join(folder, 'calibration')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(osp.join(folder, f'{i}.png'),
                    rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return folder


def onnxruntime_infer_step(case: Case, args) -> Callable[[], None]:
    from cgrseg.deploy.onnx_export import INPUT_NAME, onnx_session
    session = onnx_session(args.onnx_files[case], args.threads)
    images = random_images(args).numpy()

    # A file given with both outputs: fetch the measured one only.
    outputs = [o.name for o in session.get_outputs()]
    fetch = [case.output] if case.output in outputs else None

    def step():
        session.run(fetch, {INPUT_NAME: images})

    return step


def train_step(case: Case, args) -> Callable[[], None]:
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = build_segmentor(case.config, args.device).train()
    device = args.device
    inputs = torch.randn(args.batch, 3, *args.shape, device=device)
    num_classes = model.decode_head.num_classes
    samples = []
    for _ in range(args.batch):
        sample = SegDataSample(metainfo=dict(img_shape=tuple(args.shape)))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, *args.shape), device=device))
        samples.append(sample)
    optim_cfg = model.cfg.optim_wrapper.copy()
    optim_cfg.type = 'OptimWrapper'
    if case.precision == 'fp16':
        optim_cfg.type, optim_cfg.loss_scale = 'AmpOptimWrapper', 'dynamic'
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    loss_fn = model.loss
    if case.backend == 'compile':
        loss_fn = torch.compile(model.loss)
    autocast = autocast_context(args, case.precision)

    def step():
        with autocast():
            losses = loss_fn(inputs, samples)
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)

    return step


STEP_BUILDERS: Dict[tuple, Callable] = {
    ('infer', 'pytorch'): pytorch_infer_step,
    ('infer', 'deploy'): deploy_infer_step,
    ('infer', 'compile'):
    lambda case, args: deploy_infer_step(case, args, compile_model=True),
    ('infer', 'onnxruntime'): onnxruntime_infer_step,
    ('infer', 'onnxruntime-dynamic'): onnxruntime_infer_step,
    ('infer', 'onnxruntime-int8'): onnxruntime_infer_step,
    ('train', 'pytorch'): train_step,
    ('train', 'compile'): train_step,
}


def measure(case: Case, args, queue) -> None:
    from mmengine.logging import MMLogger

    # The optimizer constructor logs every parameter's options at INFO.
    MMLogger.get_instance('benchmark', log_level='WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    step = STEP_BUILDERS[case.mode, case.backend](case, args)
    cuda = args.device.startswith('cuda') and case.backend not in \
        ONNX_BACKENDS
    before = current_memory_mib()
    times = time_steps(step, args.runs, args.warmup, cuda)
    peak = peak_memory_mib(cuda)
    queue.put((times, peak, None if cuda else peak - before))


def main() -> None:
    args = parse_args()
    if args.keep_heap:
        # Read by glibc when a process starts: the spawned children see it.
        os.environ['GLIBC_TUNABLES'] = KEEP_HEAP_TUNABLES
    todo = cases(args)
    print(f'device={args.device} threads={args.threads or "default"} '
          f'input={args.batch}x3x{args.shape[0]}x{args.shape[1]} '
          f'runs={args.runs} warmup={args.warmup} rounds={args.rounds} '
          f'torch={torch.__version__} '
          f'GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")!r}')
    with tempfile.TemporaryDirectory() as tmp:
        args.onnx_files = {}
        for i, case in enumerate(c for c in todo
                                 if c.backend in ONNX_BACKENDS):
            if case.backend in args.given_onnx:
                args.onnx_files[case] = args.given_onnx[case.backend]
                print(f'{case.label()}: ONNX input '
                      f'{onnx_input_shape(args.onnx_files[case])}, given '
                      f'({args.onnx_files[case]})')
                continue
            started = time.perf_counter()
            args.onnx_files[case] = run_in_fresh_process(
                export_for_onnxruntime, case, args,
                osp.join(tmp, f'{i}.onnx'))
            print(f'{case.label()}: ONNX input '
                  f'{onnx_input_shape(args.onnx_files[case])}, exported in '
                  f'{time.perf_counter() - started:.0f} s (a fresh process)')
        times: Dict[Case, List[float]] = {case: [] for case in todo}
        memory: Dict[Case, tuple] = {}
        for _ in range(args.rounds):
            for case in todo:
                case_times, peak, added = run_in_fresh_process(
                    measure, case, args)
                times[case] += case_times
                memory[case] = (peak, added)
    for case in todo:
        median = statistics.median(times[case])
        unit = 'img/s' if case.mode == 'infer' else 'iter/s'
        rate = (args.batch if case.mode == 'infer' else 1) / median
        peak, added = memory[case]
        extra = f' (+{added:.0f} while timed)' if added is not None else ''
        baseline = Case(case.config, case.mode, case.precision, 'pytorch',
                        case.output)
        ratio = (f', {median / statistics.median(times[baseline]):.2f}x '
                 f'pytorch' if baseline in times and baseline != case
                 else '')
        print(f'{case.label()}: median {median:.4f}s (min '
              f'{min(times[case]):.4f}, max {max(times[case]):.4f}) -> '
              f'{rate:.2f} {unit}{ratio}, peak memory {peak:.0f} '
              f'MiB{extra}')


if __name__ == '__main__':
    main()

"""What distillation costs: step time and memory of a distillation config.

Three cases, each in a fresh process that builds only what it needs and
times ``--runs`` iterations after ``--warmup`` on a random batch of the
config's crop size:

* ``student``: one training step of the student alone (data preprocessing,
  forward with its losses, backward, the config's optimizer step);
* ``teacher``: the teacher's forward under ``torch.no_grad`` as distillation
  runs it (backbone, plus the decode head when a loss uses it);
* ``kd``: one training step of the DistillEncoderDecoder (student step,
  teacher forward, distillation losses and connectors).

For a config with stored teacher targets (``model.teacher.stored_targets``)
``kd`` is the step that reads them (random targets of the stored format,
written to a temporary directory: read, decoded and warped at every step as
in training) and a fourth case, ``kd-live``, is the same config with the
teacher run live; it then prints ``kd / student`` (what a step with stored
targets costs) and the one-time cost of computing the targets: the
teacher's forward per image (at this input size, batched) times the
recipe's views (the sum of their scales squared, twice with mirrored ones:
their pixels over one test-size view's).

It prints the median times, the ratio ``kd / (student + teacher)`` (the
overhead of the distillation machinery itself), the peak memory of each
case (``torch.cuda.max_memory_allocated`` on CUDA, the process's peak
resident set on CPU, with its resident set after building the models) and
the bytes autograd stores for backward during one loss forward (the
"activations"; the teacher, under no_grad, stores none). Figures are
printed, not asserted: report them with the machine they came from.

    python tools/analysis_tools/distill_cost.py CONFIG [--batch 8]
        [--shape 128 128] [--runs 10] [--warmup 3] [--rounds 1]
        [--threads 1] [--device cpu] [--amp] [--teacher-checkpoint PATH]

Without ``--teacher-checkpoint`` the config's teacher checkpoint is used if
it exists, else a randomly initialised teacher (the cost does not depend
on the weights).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import tempfile
from contextlib import nullcontext

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from cgrseg.engine.library_notices import library_warnings_ignored
from measuring import (current_memory_mib, peak_memory_mib,
                       run_in_fresh_process, time_steps)

CASES = ('student', 'teacher', 'kd')
STORED_CASES = ('student', 'teacher', 'kd-live', 'kd')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a DistillEncoderDecoder config')
    parser.add_argument(
        '--batch', type=int, default=None,
        help='images per step (default: the config\'s train batch size)')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=None,
        help='input H W (default: the data preprocessor\'s size)')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--rounds', type=int, default=1,
        help='run the three cases this many times in turn (a fresh process '
        'each) and pool their times: on a shared machine this spreads '
        'load changes over all cases')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--amp', action='store_true',
        help='autocast: fp16 on CUDA, bfloat16 on CPU (as tools/train.py)')
    parser.add_argument('--teacher-checkpoint')
    return parser.parse_args()


def load_cfg(args: argparse.Namespace) -> Config:
    import cgrseg  # noqa: F401
    from cgrseg.engine.tool_setup import configure_amp, configure_sync_bn
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.teacher.checkpoint = args.teacher_checkpoint
    if args.device == 'cpu':
        configure_sync_bn(cfg)
    configure_amp(cfg, enable=args.amp)
    return cfg


def random_batch(num_classes: int, args: argparse.Namespace) -> dict:
    gen = torch.Generator().manual_seed(0)
    images, samples = [], []
    for index in range(args.batch):
        images.append(torch.randint(0, 256, (3, *args.shape), generator=gen,
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=tuple(args.shape), pad_shape=tuple(args.shape),
            ori_shape=tuple(args.shape),
            img_path=osp.join(args.stored_dir or '', f'{index}.png'),
            scale_factor=(1., 1.), flip=False,
            crop_bbox=(0, args.shape[0], 0, args.shape[1])))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, *args.shape), generator=gen))
        samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def make_step(case: str, cfg: Config, args: argparse.Namespace):
    """Build what ``case`` needs; return (step, loss_forward, models)."""
    from cgrseg.models.segmentors.distill_encoder_decoder import \
        student_config
    from cgrseg.models.segmentors.distill_layers import (layer_outputs,
                                                         teacher_needs_head)
    from cgrseg.models.segmentors.teacher import build_teacher
    device = args.device
    if case == 'teacher':
        teacher = build_teacher(
            dict(config=cfg.model.teacher.config,
                 checkpoint=cfg.model.teacher.checkpoint)).to(device)
        run_head = teacher_needs_head(
            [loss['teacher'] for loss in cfg.model.distill_losses])
        preprocessor = MODELS.build(cfg.model.data_preprocessor).to(device)
        data = preprocessor(
            random_batch(teacher.decode_head.num_classes, args), True)
        dtype = {'cpu': torch.bfloat16, 'cuda': torch.float16}[
            device.split(':')[0]]
        autocast = torch.autocast(device.split(':')[0], dtype=dtype) \
            if args.amp else nullcontext()

        def step():
            with torch.no_grad(), autocast:
                layer_outputs(teacher, data['inputs'], run_head)

        return step, None, [teacher]
    model_cfg = cfg.model if case.startswith('kd') else student_config(
        cfg.model)
    if case == 'kd-live':
        model_cfg.teacher.pop('stored_targets')
    elif case == 'kd' and args.stored_dir:
        model_cfg.teacher.stored_targets.dir = args.stored_dir
    model = MODELS.build(model_cfg).to(device).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    data = random_batch(model.decode_head.num_classes, args)

    def step():
        model.train_step(data, optim_wrapper)

    def loss_forward():
        with optim_wrapper.optim_context(model):
            batch = model.data_preprocessor(data, True)
            return model.loss(batch['inputs'], batch['data_samples'])

    models = [model] + ([model.teacher] if getattr(model, 'teacher', None)
                        is not None else [])
    return step, loss_forward, models


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def measure(case: str, args: argparse.Namespace, queue) -> None:
    MMLogger.get_instance('distill_cost', log_level='WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_cfg(args)
    step, loss_forward, models = make_step(case, cfg, args)
    cuda = args.device.startswith('cuda')
    built_mib = (torch.cuda.memory_allocated() / 2**20
                 if cuda else current_memory_mib())
    weights_mib = sum(p.numel() * p.element_size() for m in models
                      for p in m.parameters()) / 2**20
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(step, args.runs, args.warmup, cuda)
    peak_mib = peak_memory_mib(cuda)
    stored = saved_bytes(loss_forward) / 2**20 if loss_forward else 0.
    queue.put(dict(times=times, built=built_mib, peak=peak_mib,
                   weights=weights_mib, stored=stored))


def save_random_teacher(config: str, path: str) -> None:
    import cgrseg  # noqa: F401
    from cgrseg.models.segmentors.teacher import build_teacher_model
    torch.save({'state_dict': build_teacher_model(config).state_dict()},
               path)


def fake_stored_targets(cfg: Config, args: argparse.Namespace,
                        directory: str) -> None:
    """Random targets in the stored format for the ``args.batch`` images of
    :func:`random_batch` (the views of ``args.stored_views``), with the
    teacher's stride and class count and a fingerprint that fits the
    teacher checkpoint."""
    import cgrseg  # noqa: F401
    from cgrseg.models.segmentors.distill_layers import (LOGITS,
                                                         layer_outputs)
    from cgrseg.models.segmentors.stored_targets import (
        FINGERPRINT, FORMAT_VERSION, TARGETS_SUFFIX, checkpoint_hash,
        encode_topk, save_targets, view_settings)
    from cgrseg.models.segmentors.teacher import build_teacher_model
    with torch.no_grad():
        logits = layer_outputs(
            build_teacher_model(cfg.model.teacher.config).eval(),
            torch.zeros(1, 3, *args.shape), True)[1][LOGITS][0]
    stride = round(args.shape[0] / logits.shape[-2])
    stored = cfg.model.teacher.stored_targets
    images = [f'{i}.png' for i in range(args.batch)]
    for image in images:
        save_targets(osp.join(directory, image + TARGETS_SUFFIX), [
            dict(encode_topk(torch.randn_like(logits), stored.topk),
                 to_map=(1 / stride, 1 / stride), origin=(0., 0.),
                 scale=(scale, scale), flip=flip)
            for scale, flip in args.stored_views
        ])
    with open(osp.join(directory, FINGERPRINT), 'w') as f:
        json.dump(dict(format_version=FORMAT_VERSION,
                       teacher_checkpoint=args.teacher_checkpoint,
                       teacher_weights_sha256=checkpoint_hash(
                           args.teacher_checkpoint),
                       img_dir=directory, images=images, topk=stored.topk,
                       **view_settings(stored),
                       num_classes=logits.shape[0], stride=stride), f)


def report(results: dict, memory: str, args: argparse.Namespace) -> None:
    cases = STORED_CASES if args.stored_dir else CASES
    for case in cases:
        r = results[case]
        print(f'{case:8s} median {statistics.median(r["times"]):.4f}s '
              f'(min {min(r["times"]):.4f}, max {max(r["times"]):.4f}) | '
              f'{memory} {r["peak"]:.0f} MiB (after build '
              f'{r["built"]:.0f}, weights {r["weights"]:.0f}) | stored for '
              f'backward {r["stored"]:.1f} MiB')
    median = {case: statistics.median(results[case]['times'])
              for case in cases}
    if args.stored_dir:
        live, student = median['kd-live'], median['student']
        print(f'kd (stored targets) / student = '
              f'{median["kd"] / student:.3f}; kd-live / student '
              f'= {live / student:.3f}; kd-live / (student + '
              f'teacher) = {live / (student + median["teacher"]):.3f}')
        per_image = median['teacher'] / args.batch
        # views: the pixels of every stored view over one test-size view
        views = sum(scale**2 for scale, _ in args.stored_views)
        print(f'one-time target computation: teacher forward '
              f'{per_image:.4f}s per image at {args.shape[0]}x'
              f'{args.shape[1]} (batch {args.batch}) x {views:.2f} for the '
              f'stored views = {per_image * views / median["student"]:.3f} '
              f'student steps per training image, once')
        return
    ratio = median['kd'] / (median['student'] + median['teacher'])
    print(f'kd / (student + teacher) = {ratio:.3f}')
    kd, student = results['kd'], results['student']
    print(f'kd - student: {memory} {kd["peak"] - student["peak"]:+.0f} MiB '
          f'(teacher weights {kd["weights"] - student["weights"]:.0f} '
          f'MiB), stored for backward '
          f'{kd["stored"] - student["stored"]:+.2f} MiB')


def main() -> None:
    args = parse_args()
    probe = Config.fromfile(args.config)
    if probe.model.get('type') != 'DistillEncoderDecoder':
        raise SystemExit(f'{args.config}: not a distillation config '
                         f'(model.type is {probe.model.get("type")!r}).')
    if args.batch is None:
        args.batch = probe.train_dataloader.batch_size
    if args.shape is None:
        args.shape = list(probe.model.data_preprocessor.get('size') or
                          (512, 512))
    with tempfile.TemporaryDirectory() as tmp:
        teacher = args.teacher_checkpoint or probe.model.teacher.checkpoint
        if osp.isfile(teacher):
            args.teacher_checkpoint = teacher
        else:
            args.teacher_checkpoint = osp.join(tmp, 'teacher.pth')
            save_random_teacher(probe.model.teacher.config,
                                args.teacher_checkpoint)
            teacher += ' not found: a random teacher is used'
        print(f'{osp.basename(args.config)}\ndevice={args.device} '
              f'threads={args.threads or torch.get_num_threads()} '
              f'amp={args.amp} input={args.batch}x3x{args.shape[0]}x'
              f'{args.shape[1]} runs={args.runs}x{args.rounds} '
              f'warmup={args.warmup} torch={torch.__version__}\n'
              f'teacher: {teacher}')
        args.stored_dir, args.stored_views = None, []
        stored = probe.model.teacher.get('stored_targets')
        if stored:
            from cgrseg.models.segmentors.stored_targets import \
                configured_views
            args.stored_views = configured_views(stored)
            args.stored_dir = osp.join(tmp, 'targets')
            os.makedirs(args.stored_dir)
            fake_stored_targets(probe, args, args.stored_dir)
        results = {}
        for _ in range(args.rounds):
            for case in STORED_CASES if args.stored_dir else CASES:
                result = run_in_fresh_process(measure, case, args)
                if case in results:  # pool the times of all rounds
                    result['times'] += results[case]['times']
                results[case] = result
    report(results, 'peak allocated'
           if args.device.startswith('cuda') else 'peak RSS', args)


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

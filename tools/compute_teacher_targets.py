"""Run a distillation config's teacher once over the training set and store
its logits for replay (``model.teacher.stored_targets``).

    python tools/compute_teacher_targets.py CONFIG [--batch 8] [--out DIR]
        [--threads 2] [--cfg-options ...]
    torchrun --nproc_per_node=4 \\
        tools/compute_teacher_targets.py CONFIG --launcher pytorch

CONFIG is a ``DistillEncoderDecoder`` config with
``model.teacher.stored_targets=dict(dir=DIR, topk=K[, scales=(S, ...),
flip=BOOL])``: the teacher (``model.teacher.config`` and ``checkpoint``)
sees every image of ``train_dataloader.dataset`` through the *teacher
config's* test pipeline (its test scale, no augmentation), resized by each
of ``scales`` (default ``(1.0,)``) and, with ``flip=True``, flipped too;
its logits (at their own stride) are kept as the top ``K`` classes and
values per pixel in fp16 (see
:mod:`cgrseg.models.segmentors.stored_targets`), all views of an image in
one file under DIR, next to ``fingerprint.json`` (teacher weights hash,
image list, storage settings). Images whose file exists are skipped, so an
interrupted run resumes; with several ranks each takes every
world-size-th image.
"""
import argparse
import json
import math
import os
import os.path as osp
import time
from collections import defaultdict

import torch
from mmengine.config import Config, DictAction
from mmengine.dist import (barrier, get_dist_info, init_dist,
                           is_main_process)
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.engine.tool_setup import init_gloo_process_group
from cgrseg.models.segmentors.distill_layers import LOGITS, layer_outputs
from cgrseg.models.segmentors.stored_targets import (FINGERPRINT,
                                                     FORMAT_VERSION,
                                                     TARGETS_SUFFIX,
                                                     configured_views,
                                                     encode_topk, image_key,
                                                     list_hash, save_targets,
                                                     view_settings,
                                                     weights_hash)
from cgrseg.models.segmentors.teacher import build_teacher, config_path
from cgrseg.models.utils.checkpoint import read_checkpoint, state_dict_of


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a DistillEncoderDecoder config with '
                        'model.teacher.stored_targets')
    parser.add_argument('--out', help='default: model.teacher.'
                        'stored_targets.dir of the config')
    parser.add_argument('--batch', type=int, default=8,
                        help='images per teacher forward (same size only)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as tools/train.py')
    return parser.parse_args()


def teacher_dataset(cfg: Config, teacher_cfg: Config, scale: float = 1.0,
                    flip: bool = False):
    """The student's training images through the teacher's test pipeline,
    its resize scaled by ``scale`` (a resize is added where it has none)
    and the image flipped horizontally with ``flip``."""
    dataset = cfg.train_dataloader.dataset.copy()
    if dataset.get('type') in ('RepeatDataset', 'ConcatDataset'):
        raise SystemExit('train_dataloader.dataset: wrapped data sets '
                         '(RepeatDataset, ConcatDataset) are not supported; '
                         'give the plain data set.')
    pipeline = [
        dict(step) for step in teacher_cfg.test_dataloader.dataset.pipeline
        if step['type'] != 'LoadAnnotations'
    ]
    resizes = [step for step in pipeline if step['type'] == 'Resize']
    if scale != 1.0:
        for step in resizes:
            if step.get('scale') is not None:
                # as RandomResize scales its target size by its ratio
                step['scale'] = tuple(int(x * scale)
                                      for x in to_pair(step['scale']))
            else:
                step['scale_factor'] = tuple(
                    x * scale for x in to_pair(step['scale_factor']))
        if not resizes:
            pipeline.insert(1, dict(type='Resize', scale_factor=scale,
                                    keep_ratio=True))
    if flip:
        pipeline.insert(-1, dict(type='RandomFlip', prob=1.0,
                                 direction='horizontal'))
    dataset.pipeline = pipeline
    return DATASETS.build(dataset)


def to_pair(value) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return value, value


def fingerprint(cfg: Config, dataset, digest: str, stride: int,
                num_classes: int) -> dict:
    teacher = cfg.model.teacher
    img_dir = dataset.data_prefix['img_path']
    images = [
        image_key(dataset.get_data_info(i)['img_path'], img_dir)
        for i in range(len(dataset))
    ]
    return dict(
        format_version=FORMAT_VERSION,
        teacher_config=teacher.config,
        teacher_checkpoint=teacher.checkpoint,
        teacher_weights_sha256=digest,
        img_dir=img_dir,
        images=images,
        images_sha256=list_hash(images),
        topk=teacher.stored_targets.topk,
        **view_settings(teacher.stored_targets),
        num_classes=num_classes,
        stride=stride,
        dtype='float16')


def check_resume(path: str, info: dict) -> None:
    """An existing directory must hold targets of the same teacher, images
    and settings."""
    if not osp.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    for key in ('format_version', 'teacher_weights_sha256', 'img_dir',
                'images_sha256', 'topk', 'scales', 'flip', 'num_classes',
                'stride'):
        if old.get(key) != info[key]:
            raise SystemExit(
                f'{path}: the directory holds targets with another {key} '
                f'({old.get(key)!r} != {info[key]!r}); give another --out '
                f'or delete it.')


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    stored = cfg.model.teacher.get('stored_targets')
    if not stored:
        raise SystemExit(f'{args.config}: model.teacher.stored_targets is '
                         f'not set; use a stored-targets recipe.')
    if args.launcher == 'pytorch' and not args.device.startswith('cuda'):
        init_gloo_process_group()  # as tools/train.py does on CPUs
    elif args.launcher != 'none':
        init_dist(args.launcher)
    rank, world = get_dist_info()
    out = args.out or stored.dir
    teacher_cfg = Config.fromfile(config_path(cfg.model.teacher.config))
    teacher = build_teacher(
        dict(config=cfg.model.teacher.config,
             checkpoint=cfg.model.teacher.checkpoint)).to(args.device)
    digest = weights_hash(
        state_dict_of(read_checkpoint(cfg.model.teacher.checkpoint)))
    views = configured_views(stored)
    datasets = [teacher_dataset(cfg, teacher_cfg, scale, flip)
                for scale, flip in views]
    dataset = datasets[0]
    num_classes = teacher.decode_head.out_channels

    todo = [
        i for i in range(rank, len(dataset), world)
        if not osp.isfile(target_path(out, dataset, i))
    ]
    print(f'[rank {rank}/{world}] {len(dataset)} training images, '
          f'{len(todo)} to compute ({len(views)} view(s) each: scales '
          f'{view_settings(stored)["scales"]}'
          f'{", flipped too" if stored.get("flip") else ""}), into {out}',
          flush=True)
    done, total_bytes, stride, started = 0, 0, None, time.perf_counter()
    checked = False  # the fingerprint written, or an old one checked

    def encode(batch: list) -> list:
        """Each sample's view: its top-k arrays and where they lie."""
        nonlocal stride, checked
        data = teacher.data_preprocessor(
            dict(inputs=[s['inputs'] for s in batch],
                 data_samples=[s['data_samples'] for s in batch]), False)
        inputs = data['inputs']
        with torch.no_grad():
            logits = layer_outputs(teacher, inputs, run_head=True)[1][LOGITS]
        stride = round(inputs.shape[-2] / logits.shape[-2])
        if rank == 0 and not checked:
            write_fingerprint(out, fingerprint(cfg, dataset, digest, stride,
                                               num_classes))
            checked = True
        encoded = []
        for sample, logit in zip(data['data_samples'], logits):
            meta = sample.metainfo
            w_scale, h_scale = meta.get('scale_factor', None) or (1., 1.)
            cells_y = logit.shape[-2] / inputs.shape[-2]  # per input pixel
            cells_x = logit.shape[-1] / inputs.shape[-1]
            # Only the logits over the image, not over the batch padding
            # (bottom/right): the map keeps its top-left origin.
            height, width = meta['img_shape'][:2]
            logit = logit[:, :math.ceil(height * cells_y),
                          :math.ceil(width * cells_x)]
            origin_x = 0.
            if meta.get('flip', False):
                # Flipped back, its cells end at the right image edge, so
                # a last cell that ran past the flipped image's edge now
                # starts before the left one.
                logit = logit.flip(-1)
                origin_x = logit.shape[-1] - width * cells_x
            encoded.append(dict(
                encode_topk(logit, stored.topk),
                to_map=(h_scale * cells_y, w_scale * cells_x),
                origin=(0., origin_x), scale=(h_scale, w_scale),
                flip=bool(meta.get('flip', False))))
        return encoded

    for chunk_start in range(0, len(todo), args.batch):
        chunk = todo[chunk_start:chunk_start + args.batch]
        image_views = {index: [] for index in chunk}
        for view_dataset in datasets:
            groups = defaultdict(list)  # same-size images are batched
            for index in chunk:
                sample = view_dataset[index]
                groups[tuple(sample['inputs'].shape)].append((index, sample))
            for group in groups.values():
                for (index, _), view in zip(
                        group, encode([sample for _, sample in group])):
                    image_views[index].append(view)
        for index in chunk:
            total_bytes += save_targets(target_path(out, dataset, index),
                                        image_views[index])
            done += 1
        rate = done / (time.perf_counter() - started)
        print(f'[rank {rank}] {done}/{len(todo)} images, '
              f'{rate:.1f} images/s, {total_bytes / done / 1024:.1f} KiB '
              f'per image', flush=True)
    if done == 0 and rank == 0 and not osp.isfile(osp.join(out,
                                                           FINGERPRINT)):
        raise SystemExit(f'{out}: nothing computed and no fingerprint.')
    barrier()
    if is_main_process():
        sizes = [
            osp.getsize(target_path(out, dataset, i))
            for i in range(len(dataset))
            if osp.isfile(target_path(out, dataset, i))
        ]
        missing = len(dataset) - len(sizes)
        print(f'{out}: {len(sizes)} images, {sum(sizes) / 2**20:.2f} MiB '
              f'in all, {sum(sizes) / max(len(sizes), 1) / 1024:.1f} KiB '
              f'per image (top-{stored.topk} of {num_classes} classes, '
              f'fp16, stride {stride or "as stored"}, {len(views)} '
              f'view(s))' +
              (f'; {missing} still missing: rerun to resume'
               if missing else ''), flush=True)


def target_path(out: str, dataset, index: int) -> str:
    return osp.join(
        out,
        image_key(dataset.get_data_info(index)['img_path'],
                  dataset.data_prefix['img_path']) + TARGETS_SUFFIX)


def write_fingerprint(out: str, info: dict) -> None:
    path = osp.join(out, FINGERPRINT)
    check_resume(path, info)
    os.makedirs(out, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(info, f, indent=1)
    os.replace(path + '.tmp', path)


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

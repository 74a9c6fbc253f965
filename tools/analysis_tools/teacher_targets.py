"""How good are the targets a logit-distillation loss gives the student?

For every loss of a distillation config that compares
``decode_head.logits``, the teacher's logits on the images of the config's
validation set are scored as predictions (mIoU, upsampled bilinearly to
the label size as mmseg predicts):

* ``teacher``: at the teacher's own logit size (its usual mIoU, 'whole'
  inference without padding);
* ``target``: after the loss's own ``resize`` (``resize_to='student'``
  brings them to the student's logit size), i.e. what the student is
  asked to match.

A target far below the teacher means the resizing throws the teacher's
advantage away (e.g. stride-4 logits of a UPerNet squeezed to a stride-8
student: use ``resize_to='teacher'``). It also prints the teacher's mean
top-class probability at the loss's temperature (KL) or ``tau`` (CWD).

    python tools/analysis_tools/teacher_targets.py CONFIG
        [--teacher-checkpoint PATH] [--split holdout] [--threads 1]
        [--cfg-options model.distill_losses.0.resize_to=teacher]

``--split`` replaces the last folder of the validation set's image and
label paths (SyntheticShapes: ``val`` or ``holdout``).
"""
import argparse
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, MODELS

from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.engine.tool_setup import configure_sync_bn


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a DistillEncoderDecoder config')
    parser.add_argument('--teacher-checkpoint',
                        help='default: the config\'s model.teacher.checkpoint')
    parser.add_argument('--split', help='validation folder to use instead')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as tools/train.py')
    return parser.parse_args()


def validation_set(cfg: Config, split: str = None):
    dataset = cfg.val_dataloader.dataset
    if split:
        prefix = dataset.data_prefix
        for key in ('img_path', 'seg_map_path'):
            prefix[key] = osp.join(osp.dirname(prefix[key]), split)
    return DATASETS.build(dataset)


class IoU:
    """Intersections and unions per class (mmseg's IoUMetric
    arithmetic), accumulated over images."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.inter = np.zeros(num_classes)
        self.union = np.zeros(num_classes)
        self.ignore_index = ignore_index

    def add(self, logits: torch.Tensor, label: torch.Tensor) -> None:
        pred = F.interpolate(logits, size=label.shape[-2:], mode='bilinear',
                             align_corners=False).argmax(1)[0]
        inter, union, _, _ = IoUMetric.intersect_and_union(
            pred, label[0], len(self.inter), self.ignore_index)
        self.inter += inter.numpy()
        self.union += union.numpy()

    def miou(self) -> float:
        present = self.union > 0
        return 100 * float(np.mean(self.inter[present] / self.union[present]))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.teacher_checkpoint:
        cfg.model.teacher.checkpoint = args.teacher_checkpoint
    configure_sync_bn(cfg)
    model = MODELS.build(cfg.model).eval()
    losses = [
        (i, loss) for i, loss in enumerate(cfg.model.distill_losses)
        if loss.student == loss.teacher == 'decode_head.logits'
    ]
    if not losses:
        raise SystemExit(f'{args.config}: no distillation loss compares '
                         "'decode_head.logits'; nothing to score.")
    dataset = validation_set(cfg, args.split)
    classes = len(dataset.metainfo['classes'])
    scores = {'teacher': IoU(classes)}
    scores.update({i: IoU(classes) for i, _ in losses})
    confidence = {i: [] for i, _ in losses}
    sizes = {}
    with torch.no_grad():
        for sample in dataset:
            data = model.data_preprocessor(
                dict(inputs=[sample['inputs']],
                     data_samples=[sample['data_samples']]), False)
            inputs = data['inputs']
            label = data['data_samples'][0].gt_sem_seg.data
            teacher = model.teacher.decode_head.forward(
                model.teacher.extract_feat(inputs))
            student = model.decode_head.forward(model.extract_feat(inputs))
            sizes = dict(teacher=tuple(teacher.shape[-2:]),
                         student=tuple(student.shape[-2:]))
            scores['teacher'].add(teacher, label)
            for i, cfg_loss in losses:
                _, target = model.distill_losses[i].resize(student, teacher)
                scores[i].add(target, label)
                t = cfg_loss.get('temperature', cfg_loss.get('tau', 1.0))
                confidence[i].append(
                    (target / t).softmax(1).max(1)[0].mean().item())
    print(f'{len(dataset)} images; logits: teacher {sizes["teacher"]}, '
          f'student {sizes["student"]}')
    print(f'teacher at its own size: mIoU {scores["teacher"].miou():.2f}')
    for i, cfg_loss in losses:
        print(f'model.distill_losses[{i}] ({cfg_loss.type}, resize_to='
              f'{model.distill_losses[i].resize_to!r}): target mIoU '
              f'{scores[i].miou():.2f}, mean top-class probability '
              f'{np.mean(confidence[i]):.3f}')


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

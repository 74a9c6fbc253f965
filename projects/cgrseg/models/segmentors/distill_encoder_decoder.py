"""Knowledge distillation from a frozen teacher segmentor into a student
:class:`~mmseg.models.EncoderDecoder`.

The segmentor *is* the student: its ``backbone``/``neck``/``decode_head``/
``auxiliary_head`` are built from the same config entries as a plain
``EncoderDecoder``, and its :meth:`state_dict` holds the student's keys in
the plain model's order, then the connectors (``distill_losses.*``).
Prediction (``predict``, ``tools/test.py``, the inference APIs) is the
inherited ``EncoderDecoder`` code and runs the student alone.

The teacher is built from its own config file and checkpoint and is kept
outside the module tree (a plain attribute, not a submodule). Hence it is
absent from ``state_dict()``, ``parameters()`` (so from the optimizer and
from DDP's gradient buckets and broadcasts), ``train()`` and
``init_weights()``; :meth:`_apply` moves and casts it with the student
(``.to()``, ``.cuda()``, ``.half()``). It stays in ``eval()`` mode with
``requires_grad=False`` and runs under ``torch.no_grad()`` inside
:meth:`loss`, i.e. inside MMEngine's ``optim_context`` and therefore under
the same autocast as the student.

Learned distillation parameters (the connectors of
:class:`~cgrseg.models.losses.FeatureMimicLoss`) are ordinary submodules
under ``self.distill_losses``: trained, synchronised, saved in
``state_dict()`` and restored on resume like the student. Checkpoint files
keep them beside the student's ``state_dict`` (see :mod:`.distill_state`),
so a distillation checkpoint loads into the plain student config.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmseg.models import EncoderDecoder
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         SampleList, add_prefix)
from torch import Tensor

from ..losses import DistillLayerError
from .distill_layers import (LAYER_HELP, LOGITS, OutputTap, layer_outputs,
                             parse_layer, teacher_needs_head)
from .stored_targets import StoredTargets, open_stored_targets
from .teacher import build_teacher


def student_config(model_cfg: ConfigType) -> dict:
    """The plain ``EncoderDecoder`` config of the student of a
    ``DistillEncoderDecoder`` model config (a copy without ``teacher`` and
    ``distill_losses``)."""
    student = copy.deepcopy(model_cfg)
    for key in ('teacher', 'distill_losses'):
        student.pop(key)
    student['type'] = 'EncoderDecoder'
    return student


@MODELS.register_module()
class DistillEncoderDecoder(EncoderDecoder):
    """An ``EncoderDecoder`` student trained with distillation losses from a
    frozen teacher segmentor.

    Training loss = the student's own losses (``decode.*``, ``aux.*``)
    + ``m · Σ_k L_k(student layer_k, teacher layer_k)`` (``distill.*``), with
    ``m`` = :attr:`distill_loss_multiplier` (1; a schedule such as
    :class:`~cgrseg.engine.hooks.DistillLossWeightHook` may set it) and each
    ``L_k`` carrying its own ``loss_weight``.

    Args:
        teacher: ``dict(config=PATH, checkpoint=PATH)``: the teacher's
            config file (or ``'mmseg::<path>'``) and its trained checkpoint,
            loaded strictly. The teacher must normalise images as the
            student does (same ``data_preprocessor`` mean/std/channel
            order); it sees the student's preprocessed batch. With
            ``stored_targets=dict(dir=DIR, topk=K)`` the teacher is not
            built: its logits, computed once per training image by
            ``tools/compute_teacher_targets.py``, are read from ``DIR`` and
            replayed under each sample's geometric augmentation (see
            :mod:`.stored_targets`); the losses may then only use
            ``teacher='decode_head.logits'``, and ``checkpoint`` (if set)
            must hold the weights the targets came from.
        distill_losses: one entry per distilled pair: the loss config (a
            loss registered in ``MODELS``, e.g. ``PixelwiseKLLoss``,
            ``ChannelWiseDistillationLoss``, ``FeatureMimicLoss``) plus
            ``student=LAYER`` and ``teacher=LAYER``. A layer is
            ``'backbone.out.<i>'``, ``'neck.out.<i>'``,
            ``'decode_head.logits'`` or the dotted name of a submodule
            (its output is taken with a forward hook). Loss names
            (``loss_name``) must be distinct.
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg,
        data_preprocessor, pretrained, init_cfg: the student, as for
            :class:`~mmseg.models.EncoderDecoder`.
    """

    def __init__(self,
                 teacher: ConfigType,
                 distill_losses: Sequence[ConfigType],
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 neck: OptConfigType = None,
                 auxiliary_head: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 init_cfg: OptMultiConfig = None):
        super().__init__(
            backbone=backbone,
            decode_head=decode_head,
            neck=neck,
            auxiliary_head=auxiliary_head,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            pretrained=pretrained,
            init_cfg=init_cfg)
        if type(self.decode_head).loss is not BaseDecodeHead.loss:
            raise TypeError(
                f'DistillEncoderDecoder needs a student decode head whose '
                f'loss() is forward() + loss_by_feat() (BaseDecodeHead); '
                f'{type(self.decode_head).__name__} overrides loss().')
        if not distill_losses:
            raise ValueError('model.distill_losses is empty: give at least '
                             'one distillation loss.')
        self.distill_losses = nn.ModuleList()
        self.distill_pairs: List[Tuple[str, str]] = []
        self._student_taps: Dict[str, OutputTap] = {}
        self._teacher_taps: Dict[str, OutputTap] = {}
        # Building the teacher and the losses leaves the global RNG as it
        # was: with the same seed, a distillation run and a plain student
        # run start from the same student and draw the same numbers.
        teacher = dict(teacher)
        stored = teacher.pop('stored_targets', None)
        self._targets: Optional[StoredTargets] = None
        with torch.random.fork_rng(devices=[]):
            # A plain attribute, not a submodule: see the module docstring.
            if stored is None:
                object.__setattr__(self, '_teacher', build_teacher(teacher))
                self._check_preprocessing()
            else:
                object.__setattr__(self, '_teacher', None)
                self._targets = open_stored_targets(
                    teacher, stored, self.decode_head.out_channels)
            for index, cfg in enumerate(distill_losses):
                self._add_distill_loss(index, dict(cfg))
        names = [loss.loss_name for loss in self.distill_losses]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f'model.distill_losses: loss_name {duplicates} used more '
                f'than once; give each loss its own loss_name.')
        self._teacher_runs_head = teacher_needs_head(
            [spec for _, spec in self.distill_pairs])
        self.distill_loss_multiplier = 1.0

    @property
    def teacher(self) -> Optional[EncoderDecoder]:
        """The frozen teacher (not a submodule); None with stored
        targets."""
        return self._teacher

    # -- construction -----------------------------------------------------

    def _check_preprocessing(self) -> None:

        def normalisation(preprocessor: nn.Module) -> tuple:
            # SegDataPreProcessor keeps mean/std buffers only when it
            # normalises, and says so only in this private flag.
            enabled = getattr(preprocessor, '_enable_normalize', False)
            return (getattr(preprocessor, 'channel_conversion', False),
                    enabled and preprocessor.mean.flatten().tolist(),
                    enabled and preprocessor.std.flatten().tolist())

        if normalisation(self.data_preprocessor) != normalisation(
                self.teacher.data_preprocessor):
            raise ValueError(
                'model.teacher.config normalises images differently from '
                'the student (data_preprocessor mean/std/bgr_to_rgb): the '
                "teacher sees the student's preprocessed batch, so set the "
                'same values in both configs.')

    def _add_distill_loss(self, index: int, cfg: dict) -> None:
        where = f'model.distill_losses[{index}]'
        specs = []
        for role in ('student', 'teacher'):
            spec = cfg.pop(role, None)
            if not isinstance(spec, str):
                raise ValueError(f'{where}: set {role}=LAYER. {LAYER_HELP}')
            if role == 'teacher' and self._targets is not None:
                if spec != LOGITS:
                    raise ValueError(
                        f'{where}: teacher={spec!r}, but stored targets '
                        f'(model.teacher.stored_targets) hold the teacher\'s '
                        f'logits only: use teacher={LOGITS!r}, or drop '
                        f'stored_targets to run the teacher live.')
            else:
                self._check_layer(where, role, spec)
            specs.append(spec)
        loss = MODELS.build(cfg)
        if not hasattr(loss, 'loss_name'):
            raise TypeError(f'{where}: {type(loss).__name__} has no '
                            f'loss_name; it is not a distillation loss.')
        if self._targets is not None and getattr(loss, 'connector',
                                                 None) is not None:
            raise ValueError(
                f'{where}: {type(loss).__name__} with a connector cannot '
                f'read stored targets (logit losses only).')
        if (self._targets is None and specs == [LOGITS, LOGITS]
                and getattr(loss, 'connector', None) is None):
            classes = (self.decode_head.out_channels,
                       self.teacher.decode_head.out_channels)
            if classes[0] != classes[1]:
                raise ValueError(
                    f'{where} ({type(loss).__name__}) compares logits, but '
                    f'the student predicts {classes[0]} classes and the '
                    f'teacher {classes[1]}: logit distillation needs the '
                    f'same classes in the same order. Use a teacher trained '
                    f'on the student\'s dataset.')
        self.distill_losses.append(loss)
        self.distill_pairs.append((specs[0], specs[1]))

    def _check_layer(self, where: str, role: str, spec: str) -> None:
        model = self if role == 'student' else self.teacher
        kind, out_index = parse_layer(spec)
        if kind == 'neck' and not model.with_neck:
            raise ValueError(f'{where}: {role}={spec!r}, but the {role} has '
                             f'no neck. {LAYER_HELP}')
        if kind != 'module':
            return
        roots = ('backbone.', 'neck.', 'decode_head.') + (
            ('auxiliary_head.', ) if role == 'student' else ())
        try:
            module = model.get_submodule(spec)
        except AttributeError:
            module = None
        if module is None or not spec.startswith(roots):
            raise ValueError(
                f'{where}: the {role} has no layer {spec!r}. {LAYER_HELP} '
                f'Submodules must lie under {", ".join(roots)}')
        taps = self._student_taps if role == 'student' else \
            self._teacher_taps
        if spec not in taps:
            taps[spec] = OutputTap()
            module.register_forward_hook(taps[spec])

    # -- the teacher stays frozen and follows the student's device --------

    def train(self, mode: bool = True) -> 'DistillEncoderDecoder':
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if recurse and self.teacher is not None:
            self.teacher._apply(fn)
        return self

    # -- training ---------------------------------------------------------

    def _describe_pair(self, index: int) -> str:
        student, teacher = self.distill_pairs[index]
        return (f'model.distill_losses[{index}] '
                f'({type(self.distill_losses[index]).__name__}, '
                f'student={student!r}, teacher={teacher!r})')

    def _distilled_maps(self, outputs: Dict[str, Tensor],
                        role: str) -> Dict[str, Tensor]:
        """The maps of ``role`` that the losses use: return-value layers
        from ``outputs``, submodule layers from their forward hooks."""
        taps = self._student_taps if role == 'student' else \
            self._teacher_taps
        for spec, tap in taps.items():
            if not isinstance(tap.output, Tensor):
                raise DistillLayerError(
                    f'the {role} layer {spec!r} gave '
                    f'{type(tap.output).__name__}, not a tensor (a module '
                    f'that is not run in training, or returns a tuple?). '
                    f'{LAYER_HELP}')
            outputs[spec] = tap.output
        selected = {}
        for index, pair in enumerate(self.distill_pairs):
            spec = pair[0] if role == 'student' else pair[1]
            if spec not in outputs:
                raise DistillLayerError(
                    f'{self._describe_pair(index)}: the {role} gives no layer '
                    f'{spec!r}; it gives {sorted(outputs)}. {LAYER_HELP}')
            selected[spec] = outputs[spec]
        return selected

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Student losses plus the distillation losses (``distill.*``).

        Args:
            inputs: preprocessed images (N, 3, H, W).
            data_samples: with ``gt_sem_seg``.
        """
        taps = list(self._student_taps.values()) + list(
            self._teacher_taps.values())
        for tap in taps:
            tap.armed = True
        valid = None
        try:
            # The teacher first: its intermediate maps are freed before the
            # student's activations pile up; only the distilled maps stay.
            if self._targets is None:
                with torch.no_grad():
                    _, teacher = layer_outputs(self.teacher, inputs,
                                               self._teacher_runs_head)
                    teacher = self._distilled_maps(teacher, 'teacher')
            else:
                logits, valid = self._targets.batch(
                    data_samples, inputs.shape[-2:], inputs.device)
                teacher = {LOGITS: logits}
            feats, student = layer_outputs(self, inputs, run_head=True)
            losses = add_prefix(
                self.decode_head.loss_by_feat(student[LOGITS],
                                              data_samples), 'decode')
            if self.with_auxiliary_head:
                losses.update(
                    self._auxiliary_head_forward_train(feats, data_samples))
            student = self._distilled_maps(student, 'student')
        finally:
            for tap in taps:
                tap.armed, tap.output = False, None
        losses.update(self._distill(student, teacher, data_samples, valid))
        return losses

    def _distill(self, student: Dict[str, Tensor],
                 teacher: Dict[str, Tensor], data_samples: SampleList,
                 valid: Optional[Tensor]) -> Dict[str, Tensor]:
        """``valid`` (N, 1, H, W) bool at the stored targets' size: False
        where the sample is padding (no stored target); None for a live
        teacher, which gives a target everywhere."""
        losses = {}
        for index, (loss, (s_spec, t_spec)) in enumerate(
                zip(self.distill_losses, self.distill_pairs)):
            kwargs = {} if valid is None else {'valid': valid}
            if getattr(loss, 'ignore_index', None) is not None:
                kwargs['gt_sem_seg'] = torch.stack(
                    [sample.gt_sem_seg.data for sample in data_samples])
            try:
                value = loss(student[s_spec], teacher[t_spec], **kwargs)
            except DistillLayerError as err:
                raise DistillLayerError(
                    f'{self._describe_pair(index)}: {err}') from None
            losses[f'distill.{loss.loss_name}'] = (
                value * self.distill_loss_multiplier)
        return losses

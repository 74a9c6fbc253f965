"""Distillation losses between a student's and a teacher's maps.

Each loss takes the student map first and the teacher map second, both
``(N, C, H, W)``, and returns a scalar already multiplied by its
``loss_weight``. Maps of different spatial size are resized bilinearly to a
common size (``resize_to``); the teacher map never receives a gradient (the
teacher runs under ``torch.no_grad``). Computations run in float32, also
under autocast. A map pair that cannot be compared raises
:class:`DistillLayerError`, which :class:`DistillEncoderDecoder` reports
together with the config entry (``model.distill_losses[i]``).
"""
from typing import Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

RESIZE_TARGETS = ('student', 'teacher')


class DistillLayerError(ValueError):
    """A distillation layer that is missing, is not a tensor, or whose
    student/teacher maps a distillation loss cannot compare."""


def _check_temperature(name: str, key: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f'{name}: {key} must be > 0, got {value}.')


def _check_4d(student: Tensor, teacher: Tensor) -> None:
    if student.dim() != 4 or teacher.dim() != 4:
        raise DistillLayerError(
            f'expected (N, C, H, W) maps, got student '
            f'{tuple(student.shape)} and teacher {tuple(teacher.shape)}.')
    if student.shape[0] != teacher.shape[0]:
        raise DistillLayerError(
            f'batch sizes differ: student {tuple(student.shape)}, teacher '
            f'{tuple(teacher.shape)}.')


def _check_same_channels(student: Tensor, teacher: Tensor) -> None:
    if student.shape[1] != teacher.shape[1]:
        raise DistillLayerError(
            f'the student map has {student.shape[1]} channels and the '
            f'teacher map {teacher.shape[1]} '
            f'(student {tuple(student.shape)}, teacher '
            f'{tuple(teacher.shape)}). This loss compares channel by '
            f'channel: pair layers of equal width (for logits: the same '
            f'classes), or use FeatureMimicLoss with student_channels/'
            f'teacher_channels for a learned 1x1 connector.')


def resize_mask(valid: Optional[Tensor], size) -> Optional[Tensor]:
    """A (N, 1, H, W) bool mask resized to ``size`` by nearest neighbour,
    as (N, H, W); None stays None."""
    if valid is None:
        return None
    return F.interpolate(valid.float(), size=tuple(size),
                         mode='nearest')[:, 0] > 0.5


def kl_terms(student: Tensor, teacher: Tensor, dim: int) -> Tensor:
    """Per-element terms of KL(softmax(teacher) ‖ softmax(student)) over
    ``dim``; summing them over ``dim`` gives the divergence."""
    log_s = F.log_softmax(student, dim=dim)
    log_t = F.log_softmax(teacher, dim=dim)
    return log_t.exp() * (log_t - log_s)


class DistillLoss(nn.Module):
    """What every distillation loss has: ``loss_weight``, ``resize_to``
    and ``loss_name``, checked, and the float32 resize of a map pair."""

    def __init__(self, loss_weight: float, resize_to: str,
                 loss_name: str) -> None:
        super().__init__()
        name = type(self).__name__
        if loss_weight < 0:
            raise ValueError(f'{name}: loss_weight must be >= 0, got '
                             f'{loss_weight}.')
        if resize_to not in RESIZE_TARGETS:
            raise ValueError(f'{name}: resize_to must be one of '
                             f'{RESIZE_TARGETS}, got {resize_to!r}.')
        if not loss_name.startswith('loss_'):
            raise ValueError(
                f"{name}: loss_name must start with 'loss_' (MMEngine sums "
                f"only such entries), got {loss_name!r}.")
        self.loss_weight = loss_weight
        self.resize_to = resize_to
        self.loss_name = loss_name

    def resize(self, student: Tensor,
               teacher: Tensor) -> Tuple[Tensor, Tensor]:
        """Both maps in float32, one resized bilinearly to the other's
        ``(H, W)``: the teacher map to the student's for ``resize_to=
        'student'``, the student map to the teacher's for ``'teacher'``."""
        student, teacher = student.float(), teacher.float()
        if student.shape[-2:] == teacher.shape[-2:]:
            return student, teacher
        if self.resize_to == 'student':
            teacher = F.interpolate(
                teacher, size=student.shape[-2:], mode='bilinear',
                align_corners=False)
        else:
            student = F.interpolate(
                student, size=teacher.shape[-2:], mode='bilinear',
                align_corners=False)
        return student, teacher


@MODELS.register_module()
class PixelwiseKLLoss(DistillLoss):
    r"""Pixel-wise distillation of class probabilities with a temperature.

    Hinton et al., "Distilling the Knowledge in a Neural Network" (NIPS
    2014 workshop), applied per pixel as in Liu et al., "Structured
    Knowledge Distillation for Semantic Segmentation" (CVPR 2019):

    .. math::

        L = w \, T^2 \, \frac{1}{|P|} \sum_{p \in P} \sum_{c=1}^{C}
            q_c(p) \left(\log q_c(p) - \log s_c(p)\right),\quad
        q = \mathrm{softmax}_c(z^t / T),\ s = \mathrm{softmax}_c(z^s / T)

    with student logits :math:`z^s` and teacher logits :math:`z^t` of shape
    ``(N, C, H, W)`` (resized to a common size, see ``resize_to``),
    :math:`w` = ``loss_weight`` and :math:`T` = ``temperature``. The
    :math:`T^2` factor keeps the gradient scale independent of :math:`T`.
    :math:`P` is every pixel of the batch (``N·H·W`` of them) by default,
    padding included: the teacher gives a target everywhere. With
    ``ignore_index`` set, pixels whose ground-truth label equals it (e.g.
    255, mmseg's padding and "ignore" label) are left out; the label map is
    resized to the loss's size by nearest neighbour. ``valid`` (stored
    teacher targets) leaves out the pixels where the target has no value
    (the sample's padding).

    Args:
        temperature: :math:`T` (> 0).
        loss_weight: :math:`w` (>= 0).
        resize_to: ``'student'`` (default) resizes the teacher logits to
            the student's size, ``'teacher'`` the student logits to the
            teacher's.
        ignore_index: label whose pixels are excluded, or ``None`` (default)
            to use every pixel.
        loss_name: key of the loss in the loss dict (must start with
            ``'loss_'``).
    """

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 resize_to: str = 'student',
                 ignore_index: Optional[int] = None,
                 loss_name: str = 'loss_kl') -> None:
        super().__init__(loss_weight, resize_to, loss_name)
        _check_temperature(type(self).__name__, 'temperature', temperature)
        self.temperature = temperature
        self.ignore_index = ignore_index

    def forward(self,
                student: Tensor,
                teacher: Tensor,
                gt_sem_seg: Optional[Tensor] = None,
                valid: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            student: student logits (N, C, Hs, Ws).
            teacher: teacher logits (N, C, Ht, Wt).
            gt_sem_seg: labels (N, 1, H, W), needed when ``ignore_index``
                is set.
            valid: (N, 1, Ht, Wt) bool, False where the teacher map has no
                target; None: every pixel has one.
        """
        _check_4d(student, teacher)
        _check_same_channels(student, teacher)
        student, teacher = self.resize(student, teacher)
        kl = kl_terms(student / self.temperature, teacher / self.temperature,
                      dim=1).sum(dim=1)  # (N, H, W)
        valid = resize_mask(valid, kl.shape[-2:])
        if self.ignore_index is not None:
            if gt_sem_seg is None:
                raise ValueError(
                    'PixelwiseKLLoss: ignore_index is set but no label map '
                    'was given.')
            labels = F.interpolate(
                gt_sem_seg.float(), size=kl.shape[-2:],
                mode='nearest').squeeze(1)
            labelled = labels != self.ignore_index
            valid = labelled if valid is None else valid & labelled
        if valid is None:
            loss = kl.mean()
        else:
            loss = (kl * valid).sum() / valid.sum().clamp(min=1)
        return self.loss_weight * self.temperature**2 * loss


@MODELS.register_module()
class ChannelWiseDistillationLoss(DistillLoss):
    r"""Channel-wise distillation (CWD).

    Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction"
    (ICCV 2021). Each channel is turned into a distribution over its
    ``H·W`` spatial positions and the student's is pulled towards the
    teacher's:

    .. math::

        L = w \, \frac{\tau^2}{N C} \sum_{n=1}^{N} \sum_{c=1}^{C}
            \sum_{i=1}^{HW} \phi(y^t_{n,c})_i
            \left(\log \phi(y^t_{n,c})_i - \log \phi(y^s_{n,c})_i\right),
        \quad \phi(y)_i = \frac{\exp(y_i / \tau)}{\sum_j \exp(y_j / \tau)}

    for maps :math:`y^s, y^t` of shape ``(N, C, H, W)`` (resized to a common
    size, see ``resize_to``). This is the paper's Eq. 3 (:math:`\tau^2 / C`
    times the summed KL) averaged over the batch, i.e. the authors' code
    and mmrazor's ``ChannelWiseDivergence`` (sum divided by ``N·C``).

    Args:
        tau: temperature :math:`\tau` (> 0).
        loss_weight: :math:`w` (>= 0).
        resize_to: ``'student'`` (default) or ``'teacher'``, as in
            :class:`PixelwiseKLLoss`.
        loss_name: key of the loss in the loss dict.
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight: float = 1.0,
                 resize_to: str = 'student',
                 loss_name: str = 'loss_cwd') -> None:
        super().__init__(loss_weight, resize_to, loss_name)
        _check_temperature(type(self).__name__, 'tau', tau)
        self.tau = tau

    def forward(self,
                student: Tensor,
                teacher: Tensor,
                valid: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            student: student map (N, C, Hs, Ws).
            teacher: teacher map (N, C, Ht, Wt).
            valid: (N, 1, Ht, Wt) bool, False where the teacher map has no
                target (left out of both distributions); None: every
                position has one.
        """
        _check_4d(student, teacher)
        _check_same_channels(student, teacher)
        student, teacher = self.resize(student, teacher)
        valid = resize_mask(valid, student.shape[-2:])
        if valid is not None:
            # A very low logit gives probability 0 (exp underflows) in
            # both maps, so the position adds 0 * finite to the KL.
            outside = ~valid[:, None]
            student = student.masked_fill(outside, -1e4 * self.tau)
            teacher = teacher.masked_fill(outside, -1e4 * self.tau)
        n, c = student.shape[:2]
        kl = kl_terms(student.flatten(2) / self.tau,
                      teacher.flatten(2) / self.tau, dim=2).sum()
        return self.loss_weight * self.tau**2 * kl / (n * c)


@MODELS.register_module()
class FeatureMimicLoss(DistillLoss):
    r"""Feature mimicking through a learned 1×1 connector (FitNets hints).

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015): a
    regressor maps the student's feature to the teacher's width and the
    squared error to the teacher's feature is minimised:

    .. math::

        L = w \, \frac{1}{N C_t H W} \sum_{n, c, h, w}
            \left(R(g(f^s))_{n,c,h,w} - f^t_{n,c,h,w}\right)^2

    with student feature :math:`f^s` (N, C_s, H_s, W_s), teacher feature
    :math:`f^t` (N, C_t, H_t, W_t), :math:`g` a 1×1 convolution
    :math:`C_s \to C_t` with bias (the *connector*, trained with the
    student and discarded after training) and :math:`R` the bilinear resize
    to a common ``(H, W)``: the teacher's by default (``resize_to``).

    Args:
        student_channels: :math:`C_s`; together with ``teacher_channels``
            it creates the connector. Leave both ``None`` to compare maps
            of equal width directly (:math:`g` = identity).
        teacher_channels: :math:`C_t`.
        loss_weight: :math:`w` (>= 0).
        resize_to: ``'teacher'`` (default) resizes the (connected) student
            map to the teacher's size, ``'student'`` the teacher map to the
            student's.
        loss_name: key of the loss in the loss dict.
    """

    def __init__(self,
                 student_channels: Optional[int] = None,
                 teacher_channels: Optional[int] = None,
                 loss_weight: float = 1.0,
                 resize_to: str = 'teacher',
                 loss_name: str = 'loss_mimic') -> None:
        super().__init__(loss_weight, resize_to, loss_name)
        if (student_channels is None) != (teacher_channels is None):
            raise ValueError(
                'FeatureMimicLoss: give both student_channels and '
                'teacher_channels (for a learned 1x1 connector) or neither '
                f'(maps of equal width), got student_channels='
                f'{student_channels}, teacher_channels={teacher_channels}.')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.connector = None if student_channels is None else nn.Conv2d(
            student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """
        Args:
            student: student feature (N, C_s, Hs, Ws).
            teacher: teacher feature (N, C_t, Ht, Wt).
        """
        _check_4d(student, teacher)
        if self.connector is None:
            _check_same_channels(student, teacher)
        else:
            for role, x, expected in (('student', student,
                                       self.student_channels),
                                      ('teacher', teacher,
                                       self.teacher_channels)):
                if x.shape[1] != expected:
                    raise DistillLayerError(
                        f'the {role} map has {x.shape[1]} channels '
                        f'({tuple(x.shape)}) but {role}_channels is '
                        f'{expected}: set {role}_channels={x.shape[1]}.')
            student = self.connector(student)
        student, teacher = self.resize(student, teacher)
        return self.loss_weight * F.mse_loss(student, teacher)

"""The distillation losses against values computed by hand on tiny maps."""
import math

import pytest
import torch

from cgrseg.models.losses import (ChannelWiseDistillationLoss,
                                  DistillLayerError, FeatureMimicLoss,
                                  PixelwiseKLLoss)

LN3 = math.log(3)


def kl(q: list, p: list) -> float:
    return sum(a * math.log(a / b) for a, b in zip(q, p))


def softmax(z: list) -> list:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def logit_pair():
    """Two classes, one row of two pixels. Pixel 0: student (0, 0), teacher
    (ln 3, 0), i.e. probabilities (1/2, 1/2) and (3/4, 1/4); pixel 1: both
    (0, 0)."""
    student = torch.zeros(1, 2, 1, 2)
    teacher = torch.zeros(1, 2, 1, 2)
    teacher[0, 0, 0, 0] = LN3
    return student, teacher


def test_pixelwise_kl_by_hand():
    student, teacher = logit_pair()
    # T = 1: KL((3/4, 1/4) || (1/2, 1/2)) at pixel 0, 0 at pixel 1, mean.
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert expected == pytest.approx(0.065406, abs=1e-6)
    loss = PixelwiseKLLoss()(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # T = 2, weight 0.5: q = softmax(ln3 / 2, 0) = (√3, 1) / (√3 + 1).
    r3 = math.sqrt(3)
    q = [r3 / (r3 + 1), 1 / (r3 + 1)]
    expected = 0.5 * 2**2 * kl(q, [0.5, 0.5]) / 2
    loss = PixelwiseKLLoss(temperature=2.0, loss_weight=0.5)(student,
                                                             teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pixelwise_kl_ignore_index_averages_over_valid_pixels():
    student, teacher = logit_pair()
    labels = torch.tensor([[[[1, 255]]]])
    loss = PixelwiseKLLoss(ignore_index=255)(student, teacher, labels)
    assert loss.item() == pytest.approx(kl([0.75, 0.25], [0.5, 0.5]),
                                        rel=1e-6)
    labels = torch.tensor([[[[255, 0]]]])  # only the equal pixel is valid
    assert PixelwiseKLLoss(ignore_index=255)(student, teacher,
                                             labels).item() == 0
    with pytest.raises(ValueError, match='no label map'):
        PixelwiseKLLoss(ignore_index=255)(student, teacher)


def test_channel_wise_distillation_by_hand():
    # Channel 0 over its two positions: teacher (ln 3, 0), student (0, 0);
    # channel 1 equal. Loss = τ² / (N·C) · Σ KL.
    student, teacher = logit_pair()
    loss = ChannelWiseDistillationLoss()(student, teacher)
    assert loss.item() == pytest.approx(
        kl([0.75, 0.25], [0.5, 0.5]) / 2, rel=1e-6)
    # Two identical samples: the sum doubles, N·C doubles.
    loss = ChannelWiseDistillationLoss()(student.repeat(2, 1, 1, 1),
                                         teacher.repeat(2, 1, 1, 1))
    assert loss.item() == pytest.approx(
        kl([0.75, 0.25], [0.5, 0.5]) / 2, rel=1e-6)
    # τ = 2, weight 3: softmax over positions of (ln3/2, 0).
    loss = ChannelWiseDistillationLoss(tau=2.0, loss_weight=3.0)(student,
                                                                 teacher)
    expected = 3 * 4 * kl(softmax([LN3 / 2, 0]), [0.5, 0.5]) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_channel_wise_is_over_space_and_pixelwise_over_classes():
    # A teacher map that is constant over space but not over channels has
    # nothing to teach channel-wise; pixel-wise it does.
    student = torch.zeros(1, 2, 2, 2)
    teacher = torch.stack([torch.full((2, 2), LN3), torch.zeros(2, 2)])[None]
    assert ChannelWiseDistillationLoss()(student, teacher).item() == \
        pytest.approx(0, abs=1e-7)
    assert PixelwiseKLLoss()(student, teacher).item() == pytest.approx(
        kl([0.75, 0.25], [0.5, 0.5]), rel=1e-6)


def test_feature_mimic_connector_by_hand():
    loss = FeatureMimicLoss(student_channels=1, teacher_channels=2,
                            loss_weight=0.5)
    with torch.no_grad():
        loss.connector.weight.copy_(torch.tensor([[[[2.]]], [[[-1.]]]]))
        loss.connector.bias.copy_(torch.tensor([0., 1.]))
    student = torch.tensor([[[[1., 2.]]]])  # (1, 1, 1, 2)
    teacher = torch.zeros(1, 2, 1, 2)
    # g(s) = channel 0: (2, 4), channel 1: (0, -1) -> squares 4 16 0 1.
    assert loss(student, teacher).item() == pytest.approx(0.5 * 21 / 4)
    student.requires_grad_(True)
    loss(student, teacher).backward()
    assert loss.connector.weight.grad is not None
    assert student.grad is not None


def test_feature_mimic_without_connector_and_resizing():
    loss = FeatureMimicLoss()
    assert loss.connector is None
    student = torch.full((1, 3, 1, 1), 2.)
    teacher = torch.full((1, 3, 4, 4), 5.)
    # The student map is resized (bilinear) to 4x4: still 2 everywhere.
    assert loss(student, teacher).item() == pytest.approx(9.)
    assert FeatureMimicLoss(resize_to='student')(student,
                                                 teacher).item() == \
        pytest.approx(9.)


@pytest.mark.parametrize('resize_to', ['student', 'teacher'])
def test_logit_losses_resize_to_a_common_size(resize_to):
    student = torch.zeros(1, 2, 2, 2)
    teacher = torch.zeros(1, 2, 8, 8)
    teacher[:, 0] = LN3  # constant over space
    kd = PixelwiseKLLoss(resize_to=resize_to)(student, teacher)
    assert kd.item() == pytest.approx(kl([0.75, 0.25], [0.5, 0.5]),
                                      rel=1e-5)
    cwd = ChannelWiseDistillationLoss(resize_to=resize_to)(student, teacher)
    assert cwd.item() == pytest.approx(0, abs=1e-6)


def test_student_gradient_by_hand():
    """d KL(q || softmax(z)) / dz = softmax(z) - q, over classes per pixel
    (pixel-wise, mean over 2 pixels) or over positions per channel
    (channel-wise, mean over N·C = 2 channels). Only pixel 0 / channel 0
    differ: p = (1/2, 1/2), q = (3/4, 1/4). (The teacher gets no gradient
    because the distillation model runs it under no_grad: test_distill.)"""
    student, teacher = logit_pair()
    student.requires_grad_(True)
    PixelwiseKLLoss()(student, teacher).backward()
    # [class][pixel]: pixel 0 gets (p - q) / 2, pixel 1 nothing.
    expected = torch.tensor([[[[-0.125, 0.]], [[0.125, 0.]]]])
    torch.testing.assert_close(student.grad, expected)
    student.grad = None
    ChannelWiseDistillationLoss()(student, teacher).backward()
    # [channel][position]: channel 0 gets (p - q) / 2, channel 1 nothing.
    expected = torch.tensor([[[[-0.125, 0.125]], [[0., 0.]]]])
    torch.testing.assert_close(student.grad, expected)


def test_low_precision_inputs_give_float32_losses():
    student, teacher = logit_pair()
    for loss in (PixelwiseKLLoss(), ChannelWiseDistillationLoss(),
                 FeatureMimicLoss()):
        value = loss(student.bfloat16(), teacher.bfloat16())
        assert value.dtype == torch.float32


def test_channel_mismatch_is_a_clear_error():
    student, teacher = torch.zeros(1, 3, 2, 2), torch.zeros(1, 5, 2, 2)
    for loss in (PixelwiseKLLoss(), ChannelWiseDistillationLoss(),
                 FeatureMimicLoss()):
        with pytest.raises(DistillLayerError,
                           match='3 channels and the teacher map 5'):
            loss(student, teacher)
    with pytest.raises(DistillLayerError, match='set teacher_channels=5'):
        FeatureMimicLoss(student_channels=3, teacher_channels=4)(student,
                                                                 teacher)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="start with 'loss_'"):
        PixelwiseKLLoss(loss_name='kd')
    with pytest.raises(ValueError, match='temperature must be > 0'):
        PixelwiseKLLoss(temperature=0)
    with pytest.raises(ValueError, match='tau must be > 0'):
        ChannelWiseDistillationLoss(tau=-1)
    with pytest.raises(ValueError, match='resize_to'):
        ChannelWiseDistillationLoss(resize_to='input')
    with pytest.raises(ValueError, match='give both student_channels'):
        FeatureMimicLoss(student_channels=3)

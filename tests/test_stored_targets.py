"""Stored teacher targets: the replay of a sample's resize/crop/flip/padding
on a stored map, the compact top-k format, and the errors of reading
targets that do not fit the run."""
import numpy as np
import pytest
import torch
from mmcv.transforms import RandomFlip, RandomResize
from mmseg.utils import register_all_modules

from cgrseg.datasets.transforms import RecordedRandomCrop
from cgrseg.models.segmentors.stored_targets import (decode_topk,
                                                     encode_topk,
                                                     warp_to_sample)

register_all_modules()


def smooth_map(height: int, width: int, channels: int = 3) -> np.ndarray:
    """A low-frequency (H, W, C) float32 map: bilinear resizing of it by
    cv2 and by grid_sample agree to interpolation tolerance."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([
        np.sin(x / 7 + c) + np.cos(y / 9 - c) + 0.01 * x * (c + 1)
        for c in range(channels)
    ], -1).astype(np.float32)


def augment(full: np.ndarray, transforms: list, seed: int) -> dict:
    """Run mmseg's transforms on ``full`` as if it were the image."""
    np.random.seed(seed)
    results = dict(
        img=full.copy(),
        gt_seg_map=np.zeros(full.shape[:2], np.uint8),
        seg_fields=['gt_seg_map'],
        img_shape=full.shape[:2],
        ori_shape=full.shape[:2])
    for transform in transforms:
        results = transform(results)
    return results


def replay(full: np.ndarray, results: dict, crop: tuple, stride: int = 1):
    """The augmented map padded bottom/right to ``crop`` (as the data
    preprocessor pads), and the stored full map warped with the recorded
    geometry at the same resolution."""
    img = results['img']
    padded = np.zeros((crop[0], crop[1], full.shape[2]), np.float32)
    padded[:img.shape[0], :img.shape[1]] = img
    stored = torch.from_numpy(full).permute(2, 0, 1)
    if stride > 1:  # the teacher's logits: the full map at a coarser grid
        stored = torch.nn.functional.avg_pool2d(stored[None], stride)[0]
    meta = {k: results[k] for k in ('img_shape', 'scale_factor', 'crop_bbox',
                                     'flip', 'flip_direction') if k in results}
    warped, valid = warp_to_sample(stored, (1 / stride, 1 / stride), meta,
                                   crop, crop)
    return torch.from_numpy(padded).permute(2, 0, 1), warped, valid


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
@pytest.mark.parametrize('crop', [(24, 32), (48, 40), (64, 80)])
def test_crop_and_flip_replay_exactly(crop, direction):
    """Crop (inside the image, and larger than it in one or both axes, so
    the preprocessor pads) + flip: the warped stored map is the augmented
    map, exactly, and ``valid`` marks exactly the unpadded pixels."""
    full = np.random.default_rng(0).normal(size=(40, 56, 3)).astype(
        np.float32)
    for seed in range(4):
        results = augment(full, [
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5 + 0.5 * (seed % 2), direction=direction)
        ], seed)
        expected, warped, valid = replay(full, results, crop)
        height, width = results['img'].shape[:2]
        mask = torch.zeros(crop, dtype=torch.bool)
        mask[:height, :width] = True
        assert torch.equal(valid, mask)
        torch.testing.assert_close(warped[:, valid], expected[:, valid],
                                   rtol=0, atol=0)


@pytest.mark.parametrize('crop', [(48, 48), (96, 112)])
def test_resize_crop_flip_replay_to_interpolation_tolerance(crop):
    """RandomResize (down and up) + crop (padding when the resized image is
    smaller) + flip: equal to bilinear interpolation error."""
    full = smooth_map(64, 80)
    for seed in range(6):
        results = augment(full, [
            RandomResize(scale=(80, 64), ratio_range=(0.5, 1.5),
                         keep_ratio=True),
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5),
        ], seed)
        expected, warped, valid = replay(full, results, crop)
        assert valid.any()
        error = (warped[:, valid] - expected[:, valid]).abs()
        # cv2's resize and grid_sample both sample at pixel centres; they
        # differ by the arithmetic of the coordinates and at the border.
        assert error.max() < 0.03, (seed, error.max())


def test_replay_at_the_teachers_stride():
    """A map stored at stride 4 (the teacher's logits) and warped to a
    stride-4 grid equals the augmented full map pooled to stride 4 (up to
    the bilinear sampling of a smooth map), padding excluded."""
    full = smooth_map(64, 96)
    crop = (48, 64)
    for seed in range(4):
        results = augment(full, [
            RecordedRandomCrop(crop_size=crop),
            RandomFlip(prob=0.5)
        ], seed)
        expected, _, _ = replay(full, results, crop)
        stored = torch.nn.functional.avg_pool2d(
            torch.from_numpy(full).permute(2, 0, 1)[None], 4)[0]
        meta = {k: results[k] for k in ('img_shape', 'crop_bbox', 'flip',
                                         'flip_direction')}
        warped, valid = warp_to_sample(stored, (0.25, 0.25), meta,
                                       (12, 16), crop)
        pooled = torch.nn.functional.avg_pool2d(expected[None], 4)[0]
        assert valid.all()
        assert (warped - pooled).abs().max() < 0.05


def test_topk_format_keeps_top_classes_and_rest_mass():
    logits = torch.randn(7, 5, 6) * 3
    arrays = encode_topk(logits, 3)
    assert arrays['values'].dtype == np.float16
    assert arrays['indices'].dtype == np.uint8
    dense = decode_topk(*(torch.from_numpy(arrays[k])
                          for k in ('values', 'indices', 'rest')), 7)
    p, q = logits.softmax(0), dense.softmax(0)
    top = logits.topk(3, dim=0).indices
    torch.testing.assert_close(q.gather(0, top), p.gather(0, top),
                               atol=2e-3, rtol=0)
    exact = decode_topk(*(torch.from_numpy(encode_topk(logits, 7)[k])
                          for k in ('values', 'indices', 'rest')), 7)
    torch.testing.assert_close(exact, logits, atol=2e-2, rtol=1e-3)

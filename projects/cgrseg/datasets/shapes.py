"""SyntheticShapes: the embedded demo dataset, generated deterministically.

128×128 RGB scenes on a textured background with 2–5 filled shapes, each of
one of four classes (disc, square, triangle, bar). A class has a preferred
hue but colours overlap between classes and shapes occlude one another, so a
model has to use shape as well as colour. Layout is mmseg's usual one::

    data_root/img_dir/{train,val,holdout}/NNNN.png   (BGR images)
    data_root/ann_dir/{train,val,holdout}/NNNN.png   (uint8 labels 0..4)

The files are written on first use (96 train, 24 val, 96 holdout images,
~4 MB) with atomic renames, so concurrent ranks of a distributed run do not
race. ``holdout`` is for choosing recipes and hyper-parameters (e.g. with
``tools/analysis_tools/seed_study.py --split holdout``) so that the ``val``
split, which the demo configs report, is not tuned on.
"""
import os
import os.path as osp
import tempfile
from typing import Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

CLASSES = ('background', 'disc', 'square', 'triangle', 'bar')
PALETTE = [[0, 0, 0], [220, 20, 60], [0, 130, 200], [255, 190, 0],
           [60, 180, 75]]
# (count, seed offset); the offsets keep the splits' scenes disjoint.
SPLITS = {'train': (96, 0), 'val': (24, 10_000), 'holdout': (96, 20_000)}
SIZE = 128
CLASS_HUES = {1: 0, 2: 110, 3: 30, 4: 60}  # OpenCV hue (0..179) per class


def _smooth_noise(rng: np.random.Generator, size: int, cells: int,
                  channels: int) -> np.ndarray:
    coarse = rng.uniform(0, 1, (cells, cells, channels)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _colour(rng: np.random.Generator, label: int) -> Tuple[int, int, int]:
    hue = (CLASS_HUES[label] + rng.integers(-25, 26)) % 180
    hsv = np.uint8([[[hue, rng.integers(120, 256), rng.integers(110, 256)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _draw_shape(rng: np.random.Generator, img: np.ndarray, seg: np.ndarray,
                label: int) -> None:
    colour = _colour(rng, label)
    cx, cy = rng.integers(16, SIZE - 16, 2)
    r = int(rng.integers(10, 26))
    if label == 1:
        for canvas, value in ((img, colour), (seg, label)):
            cv2.circle(canvas, (int(cx), int(cy)), r, value, -1)
        return
    if label == 2:
        box = cv2.boxPoints(((float(cx), float(cy)), (1.6 * r, 1.6 * r),
                             float(rng.uniform(0, 90))))
        points = box.astype(np.int32)
    elif label == 3:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        points = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)],
                          1).astype(np.int32)
    else:
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)]) * 2.2 * r
        p0 = (int(cx - d[0]), int(cy - d[1]))
        p1 = (int(cx + d[0]), int(cy + d[1]))
        thickness = int(rng.integers(5, 9))
        for canvas, value in ((img, colour), (seg, label)):
            cv2.line(canvas, p0, p1, value, thickness)
        return
    for canvas, value in ((img, colour), (seg, label)):
        cv2.fillPoly(canvas, [points], value)


def make_sample(seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """One (BGR image (128, 128, 3) uint8, label map (128, 128) uint8)."""
    rng = np.random.default_rng(seed)
    texture = _smooth_noise(rng, SIZE, 4, 3) * 0.6 + 0.2
    img = (texture * 255).astype(np.uint8)
    seg = np.zeros((SIZE, SIZE), np.uint8)
    for label in rng.integers(1, len(CLASSES), rng.integers(2, 6)):
        _draw_shape(rng, img, seg, int(label))
    noise = rng.normal(0, 8, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, seg


def _write_atomically(path: str, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode('.png', array)
    assert ok, f'PNG encoding failed for {path}'
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.tmp')
    with os.fdopen(fd, 'wb') as f:
        f.write(encoded.tobytes())
    os.replace(tmp, path)


def generate_shapes(data_root: str) -> None:
    """Write any missing file of the dataset under ``data_root``."""
    for split, (count, offset) in SPLITS.items():
        img_dir = osp.join(data_root, 'img_dir', split)
        ann_dir = osp.join(data_root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            name = f'{i:04d}.png'
            if osp.exists(osp.join(img_dir, name)) and osp.exists(
                    osp.join(ann_dir, name)):
                continue
            img, seg = make_sample(offset + i)
            _write_atomically(osp.join(ann_dir, name), seg)
            _write_atomically(osp.join(img_dir, name), img)


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """The embedded demo dataset (see module docstring); generates its files
    under ``data_root`` when they are missing."""

    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    generates_missing_files = True  # tells check_data_roots to skip it

    def __init__(self, **kwargs):
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        kwargs.setdefault('reduce_zero_label', False)
        super().__init__(**kwargs)

    def load_data_list(self) -> list:
        generate_shapes(self.data_root)
        return super().load_data_list()

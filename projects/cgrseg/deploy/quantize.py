"""int8 static quantization of an exported model with ONNX Runtime."""
import glob
import logging
import os
import os.path as osp
import tempfile
from typing import Iterator, Tuple

import numpy as np

from .onnx_export import INPUT_NAME, require

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def calibration_images(calib_dir: str, shape: Tuple[int, int],
                       limit: int) -> Iterator[np.ndarray]:
    """Up to ``limit`` images of ``calib_dir`` (sorted by name) as
    (1, 3, H, W) float32 BGR batches, resized to ``shape``."""
    cv2 = require('cv2')
    paths = sorted(
        p for p in glob.glob(osp.join(calib_dir, '*'))
        if p.lower().endswith(IMAGE_SUFFIXES))[:limit]
    if not paths:
        raise FileNotFoundError(
            f'--calib-dir {calib_dir!r} holds no images '
            f'({", ".join(IMAGE_SUFFIXES)}): give a folder of images like '
            f'those the model will see, e.g. data/shapes/img_dir/train.')
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f'calibration image {path!r} cannot be read.')
        image = cv2.resize(image, (shape[1], shape[0]),
                           interpolation=cv2.INTER_LINEAR)
        yield image.transpose(2, 0, 1)[None].astype(np.float32)


def quantize_int8(model_path: str,
                  out_path: str,
                  calib_dir: str,
                  shape: Tuple[int, int],
                  limit: int = 32,
                  per_channel: bool = True) -> int:
    """Write ``out_path``: ``model_path`` with int8 weights and activations
    (QDQ format, per-channel weights, MinMax calibration on the images of
    ``calib_dir``). Returns the number of calibration images."""
    quantization = require('onnxruntime.quantization')
    batches = list(calibration_images(calib_dir, shape, limit))

    class Reader(quantization.CalibrationDataReader):

        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    # The quantizer logs a warning for every rank-1 weight (norms) that it
    # leaves per-tensor: expected here, and hundreds of lines.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = os.path.join(tmp, 'prepared.onnx')
            # ONNX Runtime's symbolic shape inference stops at the label
            # stage's data-dependent cell selection (NonZero over the mixed
            # cells: "object of type 'NoneType' has no len()"); ONNX's own
            # shape inference and the graph optimisation still run.
            quantization.shape_inference.quant_pre_process(
                model_path, prepared, skip_symbolic_shape=True)
            quantization.quantize_static(
                prepared,
                out_path,
                Reader(),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8)
    finally:
        root.setLevel(level)
    _keep_json_metadata(out_path)
    return len(batches)


def _keep_json_metadata(path: str) -> None:
    """Drop the quantizer's own metadata entries (plain strings), so that
    every entry is JSON, as :func:`export_onnx` wrote them."""
    onnx = require('onnx')
    model = onnx.load(path)
    entries = [(p.key, p.value) for p in model.metadata_props]
    del model.metadata_props[:]
    for key, value in entries:
        if not key.startswith('onnx.'):
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)

"""Segment one image with an exported ONNX model; write the overlay PNG.

Needs only onnxruntime, numpy and opencv: no PyTorch, no OpenMMLab.

    python demo/onnx_demo.py IMAGE MODEL.onnx [--out-file OUT.png]
        [--opacity 0.5] [--resize] [--threads N]

MODEL.onnx comes from tools/deployment/pytorch2onnx.py: it takes the BGR
image as read by OpenCV and holds the normalisation, the class names and
the palette. A file exported for one size (no --dynamic-shape) needs images
of that size: --resize scales the image to it and the labels back.
"""
import argparse
import json
import os
import sys
from typing import Dict, Tuple

import cv2
import numpy as np
import onnxruntime as ort


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('image', help='image file')
    parser.add_argument('model', help='ONNX file from pytorch2onnx.py')
    parser.add_argument('--out-file', default='result.png')
    parser.add_argument(
        '--opacity', type=float, default=0.5,
        help='weight of the class colours in the overlay')
    parser.add_argument(
        '--resize', action='store_true',
        help="resize the image to a fixed-size model's input size")
    parser.add_argument(
        '--threads', type=int, default=0,
        help='ONNX Runtime intra-op threads (0: its default)')
    return parser.parse_args()


def load_model(path: str,
               threads: int) -> Tuple[ort.InferenceSession, Dict[str, object]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])
    except Exception as err:  # ORT raises its own exception types
        sys.exit(f'onnx_demo.py: cannot load ONNX model {path!r}: {err}')
    props = session.get_modelmeta().custom_metadata_map
    meta = {key: json.loads(value) for key, value in props.items()}
    if 'labels' not in meta.get('outputs', []):
        sys.exit(f'onnx_demo.py: {path!r} has no "labels" output (not '
                 f'exported by pytorch2onnx.py, or with --output logits); '
                 f'export it with --output labels or both.')
    return session, meta


def segment(session: ort.InferenceSession, meta: Dict[str, object],
            image: np.ndarray, resize: bool) -> np.ndarray:
    """(H, W, 3) BGR uint8 image → (H, W) label map."""
    height, width = image.shape[:2]
    fixed = meta.get('input_shape')
    if fixed != 'dynamic' and [height, width] != fixed:
        if not resize:
            sys.exit(f'onnx_demo.py: the model was exported for '
                     f'{fixed[0]}x{fixed[1]} images, this one is '
                     f'{height}x{width}: pass --resize, or export with '
                     f'--dynamic-shape.')
        image = cv2.resize(image, (fixed[1], fixed[0]),
                           interpolation=cv2.INTER_LINEAR)
    batch = image.transpose(2, 0, 1)[None].astype(np.float32)
    labels = session.run(['labels'], {'images': batch})[0][0]
    if labels.shape != (height, width):
        labels = cv2.resize(labels.astype(np.int32), (width, height),
                            interpolation=cv2.INTER_NEAREST)
    return labels


def overlay(image: np.ndarray, labels: np.ndarray, palette: list,
            opacity: float) -> np.ndarray:
    """Blend the class colours (RGB palette) into the BGR image."""
    colours = np.asarray(palette, dtype=np.float32)[:, ::-1]  # RGB → BGR
    painted = colours[labels]
    return (image * (1 - opacity) + painted * opacity).astype(np.uint8)


def main() -> None:
    args = parse_args()
    image = cv2.imread(args.image, cv2.IMREAD_COLOR) if os.path.isfile(
        args.image) else None
    if image is None:
        sys.exit(f'onnx_demo.py: cannot read image {args.image!r} (missing, '
                 f'or not an image format OpenCV reads).')
    session, meta = load_model(args.model, args.threads)
    labels = segment(session, meta, image, args.resize)
    classes = meta.get('classes') or []
    palette = meta.get('palette') or []
    if len(palette) < labels.max() + 1:
        # No palette stored: fixed pseudo-random colours.
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 256, (int(labels.max()) + 1, 3)).tolist()
    if not cv2.imwrite(args.out_file,
                       overlay(image, labels, palette, args.opacity)):
        sys.exit(f'onnx_demo.py: cannot write {args.out_file!r}.')
    present = [
        classes[i] if i < len(classes) else str(i)
        for i in np.unique(labels)
    ]
    print(f'{args.image} -> {args.out_file} (classes: '
          f'{", ".join(map(str, present))})')


if __name__ == '__main__':
    main()

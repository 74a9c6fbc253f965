"""Export a segmentor checkpoint to ONNX and check it against PyTorch.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out FILE.onnx
        [--shape H W] [--dynamic-shape] [--output {labels,logits,both}]
        [--opset N] [--quantize int8 --calib-dir DIR]

The graph takes what mmseg's LoadImageFromFile gives, batched: float32
(N, 3, H, W) BGR pixel values 0-255 (input ``images``). The data
preprocessor's channel swap, normalisation and padding are inside it, and
so are the resize of the logits to the input size and the argmax. Outputs:
``logits`` (N, C, H, W) float32 and/or ``labels`` (N, H, W) int64; a
labels-only file never materialises the full-resolution logits. Class
names, palette and the exported size are stored in the model's metadata.

After writing, the file is checked with onnx.checker and run in ONNX
Runtime beside PyTorch on the same inputs (the export size, and with
--dynamic-shape two more sizes): the tool fails if the logits differ by
more than 1e-4 relative or fewer than 99.99 % of the labels agree.
A distillation config exports its student.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import DictAction

from cgrseg.apis import init_segmentor
from cgrseg.deploy import DeploySegmentor
from cgrseg.deploy.onnx_export import (compare_with_pytorch, export_onnx,
                                       onnx_session, require)
from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.models.utils.checkpoint import CheckpointError

MAX_REL_ERR = 1e-4
MIN_LABEL_AGREEMENT = 0.9999
OUTPUT_CHOICES = {
    'both': ('logits', 'labels'),
    'logits': ('logits', ),
    'labels': ('labels', ),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='config file (CGRSeg, distillation '
                        'or any mmseg EncoderDecoder config)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=[512, 512],
        metavar=('H', 'W'), help='input height and width')
    parser.add_argument(
        '--dynamic-shape', action='store_true',
        help='accept any input size (each side 65-8192 pixels) instead '
        'of --shape only; the batch size is always free')
    parser.add_argument(
        '--output', choices=list(OUTPUT_CHOICES), default='both',
        help='graph outputs: labels (N, H, W) int64, logits '
        '(N, C, H, W) float32, or both')
    parser.add_argument(
        '--opset', type=int, default=None,
        help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        '--quantize', choices=['int8'], default=None,
        help='also write FILE_int8.onnx, quantized statically by ONNX '
        'Runtime (needs --calib-dir)')
    parser.add_argument(
        '--calib-dir', help='folder of images for int8 calibration')
    parser.add_argument(
        '--calib-images', type=int, default=32,
        help='at most this many calibration images')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. model.test_cfg.mode=whole')
    args = parser.parse_args(argv)
    if args.quantize and not args.calib_dir:
        parser.error('--quantize int8 needs --calib-dir DIR: a folder of '
                     'images like those the model will see (e.g. '
                     'data/shapes/img_dir/train)')
    if min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def check_sizes(shape: List[int], dynamic: bool) -> List[tuple]:
    """The sizes to compare at: the export size, and for a dynamic file a
    smaller one and one whose sides are not multiples of 32."""
    sizes = [tuple(shape)]
    if dynamic:
        h, w = shape
        sizes += [(max(65, h // 2), max(65, w // 2)),
                  (max(65, h * 3 // 4 + 7), max(65, w * 5 // 8 + 13))]
    return sizes


def check(model: DeploySegmentor, path: str, sizes: List[tuple]) -> None:
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(0)
    for size in sizes:
        images = torch.rand(1, 3, *size, generator=generator) * 255
        result = compare_with_pytorch(model, session, images)
        line = ', '.join(f'{k} {v:.3g}' for k, v in result.items())
        print(f'ONNX Runtime vs PyTorch at {size[0]}x{size[1]}: {line}')
        if result.get('logits_rel_err', 0) > MAX_REL_ERR or result.get(
                'label_agreement', 1) < MIN_LABEL_AGREEMENT:
            raise SystemExit(
                f'pytorch2onnx.py: {path} does not reproduce PyTorch '
                f'(limits: logits rel err <= {MAX_REL_ERR}, labels >= '
                f'{MIN_LABEL_AGREEMENT:.2%} identical). Please report this '
                f'with the config and the exporter versions.')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        for package in ('onnx', 'onnxscript', 'onnxruntime'):
            require(package)
        segmentor = init_segmentor(args.config, args.checkpoint,
                                   args.cfg_options)
        model = DeploySegmentor(segmentor, OUTPUT_CHOICES[args.output])
        meta = dict(
            classes=list(segmentor.dataset_meta.get('classes', [])),
            palette=[list(c) for c in segmentor.dataset_meta.get(
                'palette') or []],
            config=osp.basename(args.config))
        size = 'dynamic size' if args.dynamic_shape else '%dx%d' % tuple(
            args.shape)
        print(f'exporting {args.config} with {args.checkpoint} ({size}, '
              f'outputs: {", ".join(model.outputs)}) ...')
        export_onnx(model, args.out, tuple(args.shape), args.dynamic_shape,
                    args.opset, meta)
        print(f'wrote {args.out}')
        check(model, args.out, check_sizes(args.shape, args.dynamic_shape))
        if args.quantize:
            from cgrseg.deploy.quantize import quantize_int8
            quantized = osp.splitext(args.out)[0] + '_int8.onnx'
            count = quantize_int8(args.out, quantized, args.calib_dir,
                                  tuple(args.shape), args.calib_images)
            print(f'wrote {quantized} (int8, calibrated on {count} images '
                  f'from {args.calib_dir})')
    except (CheckpointError, FileNotFoundError, ImportError,
            ValueError) as err:
        sys.exit(f'pytorch2onnx.py: {err}')


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

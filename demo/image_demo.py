"""Segment one image with a config and a checkpoint; write the overlay PNG.

    python demo/image_demo.py IMAGE CONFIG CHECKPOINT [--out-file OUT.png]
        [--device cpu] [--opacity 0.5]

Example, after the README's demo training:

    python demo/image_demo.py data/shapes/img_dir/val/0000.png \
        configs/cgrseg/cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128.py \
        work_dirs/cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128/iter_300.pth
"""
import argparse

from mmengine.config import Config
from mmseg.apis import inference_model, init_model, show_result_pyplot

import cgrseg  # noqa: F401  registers the CGRSeg modules
from cgrseg.engine.library_notices import library_warnings_ignored


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', default='result.png')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--opacity', type=float, default=0.5)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds all weights
    model = init_model(cfg, args.checkpoint, device=args.device)
    result = inference_model(model, args.image)
    show_result_pyplot(
        model, args.image, result, show=False, out_file=args.out_file,
        opacity=args.opacity)
    print(f'{args.image} -> {args.out_file}')


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

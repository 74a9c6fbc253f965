"""Quick start on CPU, no download: build CGRSeg-T/B/L from their configs,
print parameters and FLOPs, segment the shipped demo image and write the
colour-coded prediction beside it.

No trained CGRSeg weights were ever published, so unless ``--checkpoint``
is given the model is freshly initialised and the prediction shows the
pipeline, not a learned segmentation.

    python demo/quickstart.py [--checkpoint CKPT] [--out-dir work_dirs/quickstart]
"""
import argparse
import logging
import os.path as osp
import time
from pathlib import Path

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import set_random_seed
from mmseg.apis import inference_model, init_model, show_result_pyplot
from mmseg.datasets import ADE20KDataset

import cgrseg  # noqa: F401  registers the CGRSeg modules

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    'CGRSeg-T': 'configs/cgrseg/cgrseg_efficientformerv2-s1_4xb4-adamw-160k_'
                'ade20k-512x512.py',
    'CGRSeg-B': 'configs/cgrseg/cgrseg_efficientformerv2-s2_4xb4-adamw-160k_'
                'ade20k-512x512.py',
    'CGRSeg-L': 'configs/cgrseg/cgrseg_efficientformerv2-l_4xb4-adamw-160k_'
                'ade20k-512x512.py',
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--image', default=str(ROOT / 'demo' / 'demo.png'))
    parser.add_argument(
        '--checkpoint', help='CGRSeg-T checkpoint to segment with')
    parser.add_argument(
        '--out-dir', default=str(ROOT / 'work_dirs' / 'quickstart'))
    return parser.parse_args()


def load_config(path: str) -> Config:
    cfg = Config.fromfile(str(ROOT / path))
    cfg.model.backbone.init_cfg = None  # no ImageNet weights offline
    return cfg


def main():
    args = parse_args()
    set_random_seed(0)
    # the FLOP counter warns about every operator it does not count
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    print(f'{"model":<9} {"params":>8} {"GFLOPs@512x512":>15}')
    for name, path in CONFIGS.items():
        model = init_model(load_config(path), device='cpu')
        info = get_model_complexity_info(
            model, input_shape=(3, 512, 512), show_table=False,
            show_arch=False)
        print(f'{name:<9} {info["params"] / 1e6:>7.2f}M '
              f'{info["flops"] / 1e9:>15.2f}')

    cfg = load_config(CONFIGS['CGRSeg-T'])
    model = init_model(cfg, args.checkpoint, device='cpu')
    if getattr(model, 'dataset_meta', None) is None:
        model.dataset_meta = ADE20KDataset.METAINFO
    start = time.perf_counter()
    result = inference_model(model, args.image)
    seconds = time.perf_counter() - start
    out_file = osp.join(args.out_dir, 'cgrseg-t_' + osp.basename(args.image))
    show_result_pyplot(
        model, args.image, result, show=False, out_file=out_file,
        opacity=0.6)
    classes = torch.unique(result.pred_sem_seg.data).numel()
    print(f'CGRSeg-T segmented {args.image} in {seconds:.2f}s '
          f'({classes} classes present) -> {out_file}')
    if args.checkpoint is None:
        print('(untrained weights: pass --checkpoint for a real prediction)')


if __name__ == '__main__':
    main()

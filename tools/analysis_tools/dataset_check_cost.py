"""What DatasetCheckHook's file check costs: the time to read every label
map and image header of a generated folder data set (the layout and
BaseSegDataset of docs/own_data.md), per image size.

    python tools/analysis_tools/dataset_check_cost.py [--count 2000]
        [--sizes 64 512] [--repeats 3]

Each (size, repeat) runs in a fresh process, the sizes interleaved; the
medians are printed. The files are just written, so they are read from the
page cache: a first read from a cold disk adds its I/O.
"""
import argparse
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'own_data',
    'cgrseg_efficientformerv2-s1_1xb8-adamw-20k_my-dataset-512x512.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--count', type=int, default=2000,
                        help='image/label map pairs per size')
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 512],
                        help='square image sizes')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--one', metavar='ROOT',
                        help=argparse.SUPPRESS)  # time one data set
    return parser.parse_args()


def generate(root: str, count: int, size: int) -> None:
    """``count`` JPEG images and PNG label maps (3 classes in bands)."""
    rng = np.random.default_rng(0)
    for folder in ('img_dir/train', 'ann_dir/train'):
        os.makedirs(osp.join(root, folder), exist_ok=True)
    for i in range(count):
        top, bottom = sorted(rng.integers(1, size, 2))
        label = np.full((size, size), 2, np.uint8)
        label[:bottom] = 1
        label[:top] = 0
        image = np.uint8([[40, 90, 200], [30, 140, 30],
                          [140, 20, 20]])[label]
        cv2.imwrite(osp.join(root, 'img_dir/train', f'{i:05d}.jpg'), image)
        cv2.imwrite(osp.join(root, 'ann_dir/train', f'{i:05d}.png'), label)


def time_check(root: str) -> float:
    """Seconds :func:`check_dataset_files` takes on the training set."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import cgrseg  # noqa: F401  registers the project's modules
    from cgrseg.datasets import check_dataset_files
    cfg = Config.fromfile(CONFIG)
    cfg.train_dataloader.dataset.data_root = root
    init_default_scope('mmseg')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    start = time.perf_counter()
    check_dataset_files(dataset, 'train_dataloader.dataset',
                        len(dataset.metainfo['classes']))
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.one:
        print(time_check(args.one))
        return
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for size in args.sizes:
            roots[size] = osp.join(tmp, str(size))
            generate(roots[size], args.count, size)
        seconds = {size: [] for size in args.sizes}
        for _ in range(args.repeats):
            for size in args.sizes:
                out = subprocess.run(
                    [sys.executable, __file__, '--one', roots[size]],
                    check=True, capture_output=True, text=True).stdout
                seconds[size].append(float(out.split()[-1]))
    for size, values in seconds.items():
        median = statistics.median(values)
        print(f'{args.count} pairs of {size}x{size}: {median:.2f} s '
              f'({median / args.count * 1e3:.3f} ms per pair; median of '
              f'{len(values)} runs: {", ".join(f"{v:.2f}" for v in values)})')


if __name__ == '__main__':
    main()

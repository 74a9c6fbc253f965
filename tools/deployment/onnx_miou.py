"""mIoU of an exported ONNX model on a folder of images and label maps.

Checks a deployed file (e.g. the int8 one against its fp32 original) where
only ONNX Runtime, numpy and OpenCV are installed:

    python tools/deployment/onnx_miou.py MODEL.onnx IMG_DIR ANN_DIR
        [--ignore-index 255] [--threads N]

Label maps are read from ANN_DIR under the image's name with a ``.png``
suffix (mmseg's layout, e.g. data/shapes/img_dir/val and ann_dir/val). Pixels
labelled ``--ignore-index`` are left out; IoU is averaged over the classes
that occur in the labels or the predictions, as mmseg's IoUMetric does.
"""
import argparse
import glob
import json
import os.path as osp
import sys

import cv2
import numpy as np
import onnxruntime as ort


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('model', help='ONNX file with a labels output')
    parser.add_argument('img_dir', help='folder of images')
    parser.add_argument('ann_dir', help='folder of PNG label maps')
    parser.add_argument('--ignore-index', type=int, default=255)
    parser.add_argument(
        '--threads', type=int, default=0,
        help='ONNX Runtime intra-op threads (0: its default)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(
        args.model, options, providers=['CPUExecutionProvider'])
    meta = {k: json.loads(v) for k, v in
            session.get_modelmeta().custom_metadata_map.items()}
    classes = meta.get('classes') or []
    num_classes = len(classes)
    if 'labels' not in meta.get('outputs', []) or not num_classes:
        sys.exit(f'onnx_miou.py: {args.model!r} was not exported by '
                 f'pytorch2onnx.py with a labels output and class names.')
    images = sorted(glob.glob(osp.join(args.img_dir, '*')))
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for path in images:
        name = osp.splitext(osp.basename(path))[0] + '.png'
        ann = cv2.imread(osp.join(args.ann_dir, name), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if ann is None or image is None:
            sys.exit(f'onnx_miou.py: cannot read {path!r} or its label map '
                     f'{osp.join(args.ann_dir, name)!r}.')
        batch = image.transpose(2, 0, 1)[None].astype(np.float32)
        pred = session.run(['labels'], {'images': batch})[0][0]
        valid = ann != args.ignore_index
        confusion += np.bincount(
            ann[valid].astype(np.int64) * num_classes + pred[valid],
            minlength=num_classes**2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    iou = intersection[present] / union[present]
    print(f'{len(images)} images, mIoU {100 * iou.mean():.2f}, aAcc '
          f'{100 * intersection.sum() / confusion.sum():.2f}')
    for name, value in zip(np.asarray(classes)[present], iou):
        print(f'  {name}: {100 * value:.2f}')


if __name__ == '__main__':
    main()

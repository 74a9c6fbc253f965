"""Reads a segmentation dataset's files once, before training or testing,
and names in one line per kind of fault what would otherwise fail deep in a
data-loader worker or train on wrong labels: an image without a label map,
an unreadable file, a label map in colour, of another size than its image,
or with values outside the classes.

Each label map is loaded by the dataset's own ``LoadAnnotations`` (so
``reduce_zero_label``, a class ``label_map``, the decoder and the file
backend apply exactly as in training); of each image only the header is
read, for its size. Cost, measured with
``tools/analysis_tools/dataset_check_cost.py`` on 2 cores: 0.2 ms per
64x64 pair and 2 ms per 512x512 pair (docs/own_data.md).
"""
import io
import os.path as osp
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.logging import print_log
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image

from .checks import DatasetError, leaf_datasets

EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF: turned by 90 or 270 degrees


def _transforms(pipeline) -> Iterator:
    """Every transform of a pipeline, nested ones (TestTimeAug) included."""
    for transform in getattr(pipeline, 'transforms', None) or []:
        yield transform
        yield from _transforms(transform)
    for branch in getattr(pipeline, 'subroutines', None) or []:
        yield from _transforms(branch)


def _first(pipeline, kind: type):
    return next((t for t in _transforms(pipeline) if isinstance(t, kind)),
                None)


def loaded_image_size(path: str, loader: Optional[LoadImageFromFile],
                      backend_args: Optional[dict]) -> Tuple[int, int]:
    """(height, width) of the image as ``loader`` gives it, from the file's
    header: mmcv turns a JPEG by its EXIF orientation unless the loader's
    ``color_type`` is 'unchanged'."""
    source = path if '://' not in path else io.BytesIO(
        fileio.get(path, backend_args=backend_args))
    with Image.open(source) as image:
        width, height = image.size
        # For JPEG the EXIF block sits in the header; other formats may
        # need the whole file decoded to find it, and mmcv does not turn them.
        turned = image.format == 'JPEG' and image.getexif().get(
            EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS
    if turned and getattr(loader, 'color_type', 'color') != 'unchanged':
        return width, height
    return height, width


class _Findings:
    """Faults per kind: how many files, the first one's description."""

    def __init__(self) -> None:
        self.count: Dict[str, int] = {}
        self.example: Dict[str, str] = {}
        self.values: set = set()

    def add(self, kind: str, example: str) -> None:
        self.count[kind] = self.count.get(kind, 0) + 1
        self.example.setdefault(kind, example)


def _missing_hint(seg_path: str, suffix: str) -> str:
    """What to change when a label map is missing: a file of its name with
    another ending suggests ``seg_map_suffix``."""
    folder, name = osp.split(seg_path)
    if '://' in seg_path:
        return ''
    if not osp.isdir(folder):
        return (f' The folder {folder} does not exist: check '
                f'data_prefix.seg_map_path.')
    stem = name[:len(name) - len(suffix)]
    # '0001_mask.png' or '0001.bmp' for '0001', not '00010.png'
    others = sorted(
        other for other in fileio.list_dir_or_file(folder, list_dir=False)
        if other.startswith(stem) and not other[len(stem):][:1].isalnum())
    if others:
        return (f' {folder} has {others[0]}: if that is its label map, set '
                f"seg_map_suffix='{others[0][len(stem):]}'.")
    return ''


def _message(name: str, dataset, total: int, found: _Findings,
             num_classes: Optional[int], ignore_index: int) -> List[str]:
    lines = []
    count, example = found.count, found.example
    suffix = getattr(dataset, 'seg_map_suffix', '')
    if 'missing' in count:
        img_path, seg_path = example['missing']
        lines.append(
            f'{name}: {count["missing"]} of {total} images have no label '
            f'map, e.g. {img_path} (expected {seg_path}). Every image needs '
            f"a label map of its name ending in seg_map_suffix '{suffix}' "
            f'under data_prefix.seg_map_path: add the missing ones or '
            f'remove their images.' + _missing_hint(seg_path, suffix))
    if 'unset' in count:
        lines.append(
            f'{name}: data_prefix.seg_map_path is not set but the pipeline '
            f'loads label maps (LoadAnnotations): set it to the folder of '
            f'the label maps.')
    for kind, what in (('image', 'images'), ('unreadable', 'label maps')):
        if kind in count:
            lines.append(
                f'{name}: {count[kind]} {what} cannot be read, e.g. '
                f'{example[kind]}. Replace or remove them.')
    if 'colour' in count:
        lines.append(
            f'{name}: {count["colour"]} of {total} label maps are colour '
            f'images, e.g. {example["colour"]}: a label map holds one '
            f'class index per pixel (a single-channel or palette PNG); '
            f'convert the colours to class indices.')
    if 'size' in count:
        lines.append(
            f'{name}: {count["size"]} of {total} label maps differ in size '
            f'from their images, e.g. {example["size"]}: a label map must '
            f"have its image's height and width.")
    if 'values' in count:
        bad = sorted(found.values)
        reduced = getattr(dataset, 'reduce_zero_label', False)
        seen = ' after reduce_zero_label (file value - 1)' if reduced else ''
        hint = (f', or set reduce_zero_label=True if 0 marks unlabelled '
                f'pixels and 1..{num_classes} the classes') if (
                    not reduced and bad[0] == num_classes) else ''
        lines.append(
            f'{name}: {count["values"]} of {total} label maps hold values '
            f'{bad[:10]}{seen} outside the {num_classes} classes of '
            f'metainfo (0..{num_classes - 1}; {ignore_index} = ignore), '
            f'e.g. {example["values"]}. Relabel them or add the classes to '
            f'metainfo (and model.decode_head.num_classes){hint}.')
    return lines


def _check_sample(info: dict, image_loader, mask_loader, backend_args,
                  num_classes: Optional[int], ignore_index: int,
                  found: _Findings) -> None:
    img_path, seg_path = info['img_path'], info.get('seg_map_path')
    if seg_path is None:
        found.add('unset', img_path)
        return
    try:
        seg = mask_loader.transform(info)['gt_seg_map']
    except FileNotFoundError:
        found.add('missing', (img_path, seg_path))
        return
    except Exception as err:  # noqa: BLE001  any decoding fault
        found.add('unreadable', f'{seg_path} ({type(err).__name__}: {err})')
        return
    if seg.ndim == 3:
        found.add('colour', f'{seg_path} ({seg.shape[2]} channels)')
        return
    try:
        size = loaded_image_size(img_path, image_loader, backend_args)
    except Exception as err:  # noqa: BLE001  missing or not an image
        found.add('image', f'{img_path} ({type(err).__name__}: {err})')
        return
    if seg.shape != size:
        found.add('size', f'{seg_path} is {seg.shape[0]}x{seg.shape[1]} '
                  f'(HxW) but {img_path} is {size[0]}x{size[1]}')
    if num_classes is None or not seg.size or seg.max() < num_classes:
        return  # the common case, without counting the values
    present = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))
    bad = [int(v) for v in present
           if v >= num_classes and v != ignore_index]
    if bad:
        found.values.update(bad)
        found.add('values', f'{seg_path}: {bad[:10]}')


def check_dataset_files(dataset, name: str, num_classes: Optional[int],
                        ignore_index: int = 255) -> None:
    """Read every label map and image header of ``dataset`` (any mmseg
    dataset, wrappers included) whose pipeline loads label maps, and raise
    :class:`DatasetError` with one line per kind of fault found, each
    naming the count, the first file and the fix. ``name`` is the dataset's
    config key for the messages; label values must lie in
    ``[0, num_classes)`` or equal ``ignore_index`` (``None``: unchecked)."""
    lines = []
    for leaf, key in leaf_datasets(dataset, name):
        if not hasattr(leaf, 'get_data_info'):
            continue
        pipeline = getattr(leaf, 'pipeline', None)
        mask_loader = _first(pipeline, LoadAnnotations)
        total = len(leaf)
        if mask_loader is None:
            continue  # the pipeline does not read label maps
        image_loader = _first(pipeline, LoadImageFromFile)
        backend_args = getattr(image_loader, 'backend_args', None)
        found = _Findings()
        start = time.perf_counter()
        for index in range(total):
            _check_sample(leaf.get_data_info(index), image_loader,
                          mask_loader, backend_args, num_classes,
                          ignore_index, found)
        lines += _message(key, leaf, total, found, num_classes, ignore_index)
        print_log(f'{key}: read {total} label maps and image headers in '
                  f'{time.perf_counter() - start:.2f} s', logger='current')
    if lines:
        raise DatasetError('\n'.join(lines))

"""Teacher targets computed once and replayed under the student's
augmentation.

A frozen teacher's logits for a training image do not change during
training, so ``tools/compute_teacher_targets.py`` runs the teacher once per
image (at its test scale) and stores them compactly; at every training step
:class:`StoredTargets` reads the stored map of each sample and puts it
through the sample's geometric transforms (resize, crop, flip, padding:
recorded in its metainfo by the pipeline, see
:class:`cgrseg.datasets.transforms.RecordedRandomCrop`), instead of running
the teacher. Photometric transforms do not apply to it.

Storage, one ``<image path relative to the image directory>.npy`` per image
(a structured NumPy scalar: one read, no zip archive to parse) plus
``fingerprint.json``. The file holds one or more *views* of the image: the
teacher's logits at its test scale times each of ``scales``, and with
``flip=True`` also of the horizontally flipped image (flipped back). A
training sample replays the view nearest to its own resize and flip
(:func:`nearest_view`): the teacher's logits are not invariant to scale,
sub-stride shifts and flips, and the nearer view is the nearer target
(docs/distillation.md measures it). View ``i``'s fields:

- ``values_i`` (k, h, w) fp16: the k largest logits per pixel, at the
  teacher's logit stride;
- ``indices_i`` (k, h, w) uint8 (int16 above 256 classes): their classes;
- ``rest_i`` (h, w) fp16: the other classes' logit, one value that keeps
  their total probability: ``logsumexp(others) - log(C - k)`` (0 when
  k = C). At temperature 1 the decoded softmax equals the teacher's for the
  top k classes and for the rest's mass;
- ``to_map_i`` and ``origin_i`` (2,) float64: original image pixel
  coordinates (y, x) to map coordinates, ``y·to_map + origin`` (the origin
  is not 0 for a flipped view whose last cell runs past the image edge);
- ``scale_i`` (2,) float64: the view's resize (y, x) from the original
  image; ``flip_i`` () bool: whether it is the flipped image's.
"""
import hashlib
import json
import math
import os
import os.path as osp
import tempfile
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

FORMAT_VERSION = 2
FINGERPRINT = 'fingerprint.json'
TARGETS_SUFFIX = '.npy'
COMPUTE = 'python tools/compute_teacher_targets.py CONFIG'


class StoredTargetsError(ValueError):
    """Stored teacher targets that do not fit the run that reads them."""


# -- the compact format ------------------------------------------------------


def encode_topk(logits: Tensor, k: int) -> Dict[str, np.ndarray]:
    """The stored arrays of one image's logits (C, h, w)."""
    num_classes = logits.shape[0]
    if not 0 < k <= num_classes:
        raise ValueError(f'topk must be in 1..{num_classes} (the number of '
                         f'classes), got {k}.')
    logits = logits.float()
    values, indices = logits.topk(k, dim=0)  # (k, h, w)
    if k < num_classes:
        others = logits.scatter(0, indices, float('-inf'))
        rest = others.logsumexp(0) - math.log(num_classes - k)
    else:
        rest = torch.zeros_like(logits[0])
    index_type = np.uint8 if num_classes <= 256 else np.int16
    return dict(
        values=values.half().cpu().numpy(),
        indices=indices.cpu().numpy().astype(index_type),
        rest=rest.half().cpu().numpy())


def decode_topk(values: Tensor, indices: Tensor, rest: Tensor,
                num_classes: int) -> Tensor:
    """Dense float32 logits (C, h, w) from the stored top-k values and
    indices (k, h, w) and the rest's value (h, w)."""
    dense = rest.float().unsqueeze(0).expand(num_classes,
                                             *rest.shape).clone()
    return dense.scatter_(0, indices.long(), values.float())


def view_settings(stored: Mapping) -> dict:
    """A ``stored_targets`` config's ``scales`` (floats, default
    ``[1.0]``) and ``flip`` (default False): what the fingerprint keeps."""
    return dict(scales=[float(x) for x in stored.get('scales', (1.0, ))],
                flip=bool(stored.get('flip', False)))


def configured_views(stored: Mapping) -> List[Tuple[float, bool]]:
    """The (scale, mirrored) views a ``stored_targets`` config asks for:
    each scale as it is and, with ``flip``, mirrored too."""
    settings = view_settings(stored)
    flips = (False, True) if settings['flip'] else (False, )
    return [(scale, flip) for scale in settings['scales'] for flip in flips]


class TargetView(NamedTuple):
    """One stored view of an image, as stored (see the module docstring):
    the top-k arrays, where the map lies, its resize and flip."""
    values: np.ndarray
    indices: np.ndarray
    rest: np.ndarray
    to_map: Tuple[float, float]
    origin: Tuple[float, float]
    scale: Tuple[float, float]
    flip: bool

    def logits(self, num_classes: int, device=None) -> Tensor:
        """The dense float32 logits (C, h, w)."""
        return decode_topk(*(torch.from_numpy(np.array(array)).to(device)
                             for array in (self.values, self.indices,
                                           self.rest)), num_classes)


VIEW_FIELDS = ('values', 'indices', 'rest', 'to_map', 'origin', 'scale',
               'flip')


def save_targets(path: str, views: Sequence[Dict[str, np.ndarray]]) -> int:
    """Write one image's views atomically; returns the file's size in
    bytes. Each view: the arrays of :func:`encode_topk` plus ``to_map``,
    ``origin``, ``scale`` (pairs) and ``flip``."""
    arrays = {}
    for i, view in enumerate(views):
        for name in VIEW_FIELDS:
            dtype = bool if name == 'flip' else (
                np.float64 if name in ('to_map', 'origin', 'scale') else None)
            arrays[f'{name}_{i}'] = np.asarray(view[name], dtype=dtype)
    record = np.zeros((), np.dtype([(name, array.dtype, array.shape)
                                    for name, array in arrays.items()]))
    for name, array in arrays.items():
        record[name] = array
    os.makedirs(osp.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.tmp')
    with os.fdopen(fd, 'wb') as f:
        np.save(f, record, allow_pickle=False)
    os.replace(tmp, path)
    return osp.getsize(path)


def load_views(path: str) -> List[TargetView]:
    """The views of one targets file, memory-mapped: a file holds up to
    tens of them and a sample replays one, so only that view's arrays are
    read (by :meth:`TargetView.logits`)."""
    record = np.load(path, mmap_mode='r', allow_pickle=False)
    return [
        TargetView(*(record[f'{name}_{i}'] for name in ('values', 'indices',
                                                        'rest')),
                   *(tuple(record[f'{name}_{i}'].tolist())
                     for name in ('to_map', 'origin', 'scale')),
                   bool(record[f'flip_{i}']))
        for i in range(sum(name.startswith('values_')
                           for name in record.dtype.names))
    ]


def nearest_view(views: Sequence[TargetView], meta: dict) -> TargetView:
    """The view to replay for a sample: flipped horizontally as the sample
    is when such views are stored, and of the nearest resize (by ratio)."""
    _, h_scale = meta.get('scale_factor', None) or (1.0, 1.0)
    flipped = bool(meta.get('flip', False)) and meta.get(
        'flip_direction', 'horizontal') in ('horizontal', 'diagonal')
    candidates = [view for view in views if view.flip == flipped] or views
    return min(candidates,
               key=lambda view: abs(math.log(h_scale / view.scale[0])))


def weights_hash(state_dict: Dict[str, Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f'{key}|{tensor.dtype}|{tuple(tensor.shape)}'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_hash(source: str) -> str:
    """:func:`weights_hash` of the weights in a checkpoint (path or URL)."""
    from ..utils.checkpoint import read_checkpoint, state_dict_of
    return weights_hash(state_dict_of(read_checkpoint(source)))


def image_key(img_path: str, img_dir: str) -> str:
    """The name of an image's targets: its path relative to the image
    directory."""
    return osp.relpath(osp.abspath(img_path), osp.abspath(img_dir))


def list_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256('\n'.join(sorted(keys)).encode()).hexdigest()


# -- the replay --------------------------------------------------------------


def warp_to_sample(dense: Tensor,
                   to_map: Sequence[float],
                   meta: dict,
                   out_size: Tuple[int, int],
                   input_size: Tuple[int, int],
                   origin: Sequence[float] = (0.0, 0.0)
                   ) -> Tuple[Tensor, Tensor]:
    """Put a stored map through a sample's recorded geometry.

    The pipeline is mmseg's resize -> crop -> flip, then the data
    preprocessor pads bottom/right to ``input_size``. Every output pixel's
    centre is taken back through the padding, the flip, the crop and the
    resize to the original image, then to the stored map, where it is
    sampled bilinearly (exactly the stored values on pixel centres: crop
    and flip at equal scale).

    Args:
        dense: the stored map (C, h, w), covering the whole original image.
        to_map, origin: (y, x) original image pixel coordinates to
            ``dense``'s: ``coordinate · to_map + origin``.
        meta: the sample's metainfo: ``img_shape`` (the cropped image,
            before padding), ``scale_factor`` (w, h) (default 1),
            ``crop_bbox`` (y1, y2, x1, x2) (default: no crop), ``flip``,
            ``flip_direction``.
        out_size: (Ho, Wo) of the output grid, which spans ``input_size``.
        input_size: (H, W) of the padded network input.

    Returns:
        the warped map (C, Ho, Wo) and ``valid`` (Ho, Wo) bool: False on
        the padding, where the image has no pixel and the map no target.
    """
    device = dense.device
    height, width = meta['img_shape'][:2]
    w_scale, h_scale = meta.get('scale_factor', None) or (1.0, 1.0)
    y1, _, x1, _ = meta.get('crop_bbox', None) or (0, None, 0, None)
    # Output pixel centres in input pixel coordinates (edges at integers).
    ys, xs = ((torch.arange(out, dtype=torch.float64, device=device) + 0.5)
              * (size / out) for out, size in zip(out_size, input_size))
    valid = (ys < height)[:, None] & (xs < width)[None, :]
    if meta.get('flip', False):
        direction = meta.get('flip_direction', 'horizontal')
        if direction in ('horizontal', 'diagonal'):
            xs = width - xs
        if direction in ('vertical', 'diagonal'):
            ys = height - ys
    rows = _bilinear_taps((ys + y1) / h_scale * to_map[0] + origin[0],
                          dense.shape[1])
    cols = _bilinear_taps((xs + x1) / w_scale * to_map[1] + origin[1],
                          dense.shape[2])
    dense = dense.float()
    warped = 0
    for row, row_weight in rows:
        for col, col_weight in cols:
            weight = row_weight[:, None] * col_weight[None, :]
            warped = warped + weight * dense[:, row][:, :, col]
    return warped, valid


def _bilinear_taps(coords: Tensor, size: int) -> list:
    """The two (index, weight) taps of linear interpolation at pixel
    coordinates ``coords`` (edges at integers) on an axis of ``size``
    pixels, clamped at the border. In float64, so that a coordinate on a
    pixel centre gives weights exactly 1 and 0 (crop and flip replay
    exactly)."""
    position = (coords.double() - 0.5).clamp(0, size - 1)
    low = position.floor()
    weight = (position - low).float()
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    return [(low, 1 - weight), (high, weight)]


# -- reading them in training ------------------------------------------------


def read_fingerprint(directory: str) -> dict:
    path = osp.join(directory, FINGERPRINT)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'model.teacher.stored_targets.dir: no {FINGERPRINT} in '
            f'{directory!r}; compute the targets first ({COMPUTE}).')
    with open(path) as f:
        return json.load(f)


class StoredTargets:
    """The stored targets of one teacher over one training set, checked
    against the run that reads them.

    Args:
        dir: the directory written by ``tools/compute_teacher_targets.py``.
        topk: the k the config expects (checked against the stored one).
        scales, flip: the views the config expects (checked likewise).
        teacher_checkpoint: the configured teacher's checkpoint, or None;
            its weights must be those the targets were computed from.
        num_classes: the student's class count.
    """

    def __init__(self,
                 dir: str,
                 topk: int,
                 teacher_checkpoint: Optional[str],
                 num_classes: int,
                 scales: Sequence[float] = (1.0, ),
                 flip: bool = False) -> None:
        self.dir = dir
        info = read_fingerprint(dir)
        where = f'model.teacher.stored_targets ({dir!r})'
        if info.get('format_version') != FORMAT_VERSION:
            raise StoredTargetsError(
                f'{where}: format version {info.get("format_version")}, '
                f'this code reads {FORMAT_VERSION}: recompute ({COMPUTE}).')
        if info['topk'] != topk:
            raise StoredTargetsError(
                f'{where}: stored with topk={info["topk"]}, the config asks '
                f'for topk={topk}: recompute ({COMPUTE}) or set '
                f'topk={info["topk"]}.')
        views = view_settings(dict(scales=scales, flip=flip))
        stored_views = dict(scales=info['scales'], flip=info['flip'])
        if stored_views != views:
            raise StoredTargetsError(
                f'{where}: stored with views {stored_views}, the config asks '
                f'for {views}: recompute ({COMPUTE}) or set '
                f'scales={tuple(info["scales"])}, flip={info["flip"]}.')
        if info['num_classes'] != num_classes:
            raise StoredTargetsError(
                f'{where}: the teacher predicts {info["num_classes"]} '
                f'classes, the student {num_classes}: logit distillation '
                f'needs the same classes; use a teacher trained on the '
                f"student's dataset.")
        if teacher_checkpoint is not None:
            digest = checkpoint_hash(teacher_checkpoint)
            if digest != info['teacher_weights_sha256']:
                raise StoredTargetsError(
                    f'{where}: computed from other teacher weights '
                    f'({info["teacher_checkpoint"]!r}, sha256 '
                    f'{info["teacher_weights_sha256"][:12]}) than '
                    f'model.teacher.checkpoint {teacher_checkpoint!r} '
                    f'({digest[:12]}): recompute them ({COMPUTE}).')
        self.info = info
        self.num_classes = num_classes
        self.stride = info['stride']
        self._keys = set(info['images'])

    def _load(self, img_path: str) -> List[TargetView]:
        key = image_key(img_path, self.info['img_dir'])
        if key not in self._keys:
            if key.startswith('..'):
                raise StoredTargetsError(
                    f'model.teacher.stored_targets ({self.dir!r}) was '
                    f'computed for the images in {self.info["img_dir"]!r}, '
                    f'not for {img_path!r} (another data set?): recompute '
                    f'them for this training set ({COMPUTE}).')
            raise StoredTargetsError(
                f'model.teacher.stored_targets ({self.dir!r}) has no '
                f'targets for image {key!r}: compute the missing ones '
                f'(rerun {COMPUTE}, it resumes).')
        path = osp.join(self.dir, key + TARGETS_SUFFIX)
        if not osp.isfile(path):
            raise StoredTargetsError(
                f'model.teacher.stored_targets: targets file {path!r} of '
                f'image {key!r} is missing: rerun {COMPUTE} (it resumes).')
        return load_views(path)

    def batch(self, data_samples: Sequence, input_size: Tuple[int, int],
              device) -> Tuple[Tensor, Tensor]:
        """The warped targets of a batch (N, C, Ho, Wo) at the teacher's
        stride over the padded input (H, W), and ``valid`` (N, 1, Ho, Wo)
        bool."""
        out_size = (math.ceil(input_size[0] / self.stride),
                    math.ceil(input_size[1] / self.stride))
        maps, valid = [], []
        for sample in data_samples:
            view = nearest_view(self._load(sample.metainfo['img_path']),
                                sample.metainfo)
            warped, mask = warp_to_sample(view.logits(self.num_classes,
                                                      device), view.to_map,
                                          sample.metainfo, out_size,
                                          input_size, view.origin)
            maps.append(warped)
            valid.append(mask)
        return torch.stack(maps), torch.stack(valid)[:, None]


def open_stored_targets(teacher: dict, stored: dict,
                        num_classes: int) -> StoredTargets:
    """:class:`StoredTargets` from ``model.teacher`` (``config``,
    ``checkpoint``) and its ``stored_targets=dict(dir=..., topk=...,
    scales=(1.0, ), flip=False)``."""
    stored = dict(stored)
    directory, topk = stored.pop('dir', None), stored.pop('topk', None)
    views = {key: stored.pop(key) for key in ('scales', 'flip')
             if key in stored}
    if stored or not directory or not topk:
        raise ValueError(
            f'model.teacher.stored_targets: expected dict(dir=DIR, topk=K[, '
            f'scales=(S, ...), flip=BOOL]), got unknown keys {sorted(stored)} '
            f'with dir={directory!r}, topk={topk!r}.')
    return StoredTargets(directory, topk, teacher.get('checkpoint'),
                         num_classes, **views)

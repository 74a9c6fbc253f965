"""Convert a CGRSeg checkpoint of the original mmseg 0.x code to mmseg 1.x.

The 0.x file (mmcv runner: ``meta``, ``state_dict``, ``optimizer``) becomes
``{'meta': ..., 'state_dict': ...}``, which ``mmseg.apis.init_model`` and
``tools/test.py`` load; the weights keep their keys (the port's are the
original's) less DDP's ``module.`` prefix, and are checked key by key (strict)
against the CGRSeg model of the config. ``meta.CLASSES``/``PALETTE`` become
``meta.dataset_meta``; the optimizer state and the 0.x config text are left
out (listed). The file is read with ``torch.load(weights_only=True)``.

    python tools/model_converters/cgrseg_0x_to_1x.py SRC DST [--config CFG]

Without ``--config`` the config is the one in configs/cgrseg/ whose
backbone size (from the stage widths) and number of classes match.
"""
import argparse
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mmengine
import numpy as np
import torch
from mmengine.config import Config

from cgrseg.apis import init_segmentor
from cgrseg.engine.library_notices import library_warnings_ignored
from cgrseg.models.backbones.efficientformer_v2_weights import \
    efficientformerv2_arch
from cgrseg.models.utils.checkpoint import (CheckpointError,
                                            checkpoint_format,
                                            describe_checkpoint,
                                            mismatch_report, read_checkpoint,
                                            state_dict_of)

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'cgrseg'


def _plain(value):
    """numpy values (and containers of them) as Python builtins, so that
    the converted file loads with ``weights_only=True``."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_0X_PROVENANCE = ('mmcv_version', 'mmseg_version', 'iter', 'epoch', 'time')


def convert_cgrseg_0x(ckpt: dict,
                      source: str = '') -> Tuple[dict, List[str]]:
    """The mmseg 1.x (MMEngine) checkpoint of a 0.x CGRSeg checkpoint.

    The weights keep their keys (the port's keys are the original's), less
    DDP's ``module.`` prefix. ``meta.CLASSES``/``PALETTE`` become
    ``meta.dataset_meta`` (``classes``/``palette``, read by
    ``mmseg.apis.init_model``); versions and the iteration are kept under
    ``meta.converted_from``.

    Returns:
        (the new checkpoint, the top-level and ``meta`` entries left out,
        e.g. ``optimizer`` and ``meta.config``).

    Raises:
        CheckpointError: if ``ckpt`` is not an mmseg segmentor checkpoint,
            or is already a 1.x one.
    """
    state_dict = state_dict_of(ckpt)
    if checkpoint_format(state_dict) != 'segmentor':
        raise CheckpointError(
            f'{source or "the checkpoint"} is {describe_checkpoint(ckpt)}, '
            f'not an mmseg 0.x CGRSeg checkpoint (keys backbone.*, '
            f'decode_head.*).')
    meta = ckpt.get('meta') or {}
    if 'mmengine_version' in meta:
        raise CheckpointError(
            f'{source or "the checkpoint"} is already an mmseg 1.x '
            f'(MMEngine) checkpoint; load it as it is.')
    origin = {'file': os.path.basename(source)} if source else {}
    origin.update({k: _plain(meta[k]) for k in _0X_PROVENANCE if k in meta})
    new_meta = {
        'mmengine_version': mmengine.__version__,
        'converted_from': origin
    }
    if 'CLASSES' in meta:
        new_meta['dataset_meta'] = {
            'classes': _plain(meta['CLASSES']),
            'palette': _plain(meta.get('PALETTE'))
        }
    kept = set(_0X_PROVENANCE) | {'CLASSES', 'PALETTE'}
    left_out = [k for k in ckpt if k not in ('meta', 'state_dict')]
    left_out += [f'meta.{k}' for k in meta if k not in kept]
    return {'meta': new_meta, 'state_dict': state_dict}, left_out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='0.x checkpoint (e.g. iter_160000.pth)')
    parser.add_argument('dst', help='where to write the 1.x checkpoint')
    parser.add_argument(
        '--config',
        help='1.x config of the model (default: found in configs/cgrseg/ '
        'from the backbone size and number of classes)')
    return parser.parse_args(argv)


def find_config(state_dict: Dict[str, torch.Tensor]) -> str:
    """The config in configs/cgrseg/ with the checkpoint's backbone size and
    number of classes."""
    arch = efficientformerv2_arch(state_dict, 'backbone.')
    classes = state_dict.get('decode_head.conv_seg.weight')
    if classes is None:
        raise CheckpointError('no decode_head.conv_seg.weight: not a CGRSeg '
                              'segmentor checkpoint.')
    candidates = sorted(
        CONFIG_DIR.glob(f'cgrseg_efficientformerv2-{arch}_*.py'))
    for path in candidates:
        if Config.fromfile(path).model.decode_head.num_classes == len(
                classes):
            return str(path)
    raise CheckpointError(
        f'no config in {CONFIG_DIR} has an EfficientFormerV2-{arch} backbone '
        f'and {len(classes)} classes (looked at '
        f'{[p.name for p in candidates]}); pass --config.')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    ckpt = read_checkpoint(args.src)
    description = describe_checkpoint(ckpt)
    converted, left_out = convert_cgrseg_0x(ckpt, args.src)
    state_dict = converted['state_dict']
    config = args.config or find_config(state_dict)
    report = mismatch_report(init_segmentor(config), state_dict)
    if report:
        raise CheckpointError(f'{args.src!r} ({description}) checked against '
                              f'{config} does not fit:\n{report}')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    dataset_meta = converted['meta'].get('dataset_meta')
    print(f'{args.src} ({description})\n'
          f'-> {args.dst}: {len(state_dict)} tensors, all keys and shapes '
          f'of {config}\n'
          f'dataset_meta: '
          f'{len(dataset_meta["classes"]) if dataset_meta else "none"} '
          f'classes\nleft out: {", ".join(left_out) or "nothing"}\n'
          f'test it: bash tools/dist_test.sh {config} {args.dst} 4')


if __name__ == '__main__':
    with library_warnings_ignored():
        main()

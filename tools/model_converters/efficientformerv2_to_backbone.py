"""Convert EfficientFormerV2 ImageNet weights to CGRSeg backbone weights.

Reads the original release (``eformer_{s1,s2,l}_450.pth``: ``{'model': ...}``
with the classifier and distillation heads) or timm's weights
(``efficientformerv2_{s1,s2,l}.snap_dist_in1k``: ``pytorch_model.bin`` or
``model.safetensors``, keys ``stem.*``/``stages.*``), renames timm's keys to
the original's, drops the classifier (``norm``, ``head``, ``dist_head``),
checks every remaining key and shape against the EfficientFormerV2 of the
checkpoint's size, and writes ``{'meta': ..., 'state_dict': ...}`` for
``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=DST)``.
Both input formats also work there directly; this tool makes the check and
the conversion once.

    python tools/model_converters/efficientformerv2_to_backbone.py SRC DST
"""
import argparse
import os
from typing import List, Optional

import torch

from cgrseg.models.backbones import EfficientFormerV2
from cgrseg.models.backbones.efficientformer_v2_weights import (
    backbone_state_dict, complete_backbone_state_dict, efficientformerv2_arch)
from cgrseg.models.utils.checkpoint import (describe_checkpoint,
                                            read_checkpoint)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        'src', help='ImageNet checkpoint (original release or timm)')
    parser.add_argument('dst', help='where to write the backbone weights')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    ckpt = read_checkpoint(args.src)
    description = describe_checkpoint(ckpt)
    state_dict = backbone_state_dict(ckpt, args.src)
    arch = efficientformerv2_arch(state_dict)
    complete_backbone_state_dict(EfficientFormerV2(arch=arch), state_dict)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    meta = {
        'arch': arch,
        'converted_from': {
            'file': os.path.basename(args.src),
            'format': description
        }
    }
    torch.save({'meta': meta, 'state_dict': state_dict}, args.dst)
    print(f'{args.src} ({description})\n-> {args.dst}: EfficientFormerV2-'
          f'{arch} backbone, {len(state_dict)} tensors, every key and shape '
          f'checked (the segmentation bias tables are not in ImageNet '
          f'weights and start at zero, as in the original).')


if __name__ == '__main__':
    main()

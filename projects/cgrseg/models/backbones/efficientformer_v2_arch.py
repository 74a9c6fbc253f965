"""EfficientFormerV2's geometry: the sizes (``ARCH_SETTINGS``), how to tell a
size from the stage widths of its weights, and the numbering of the
relative-position bias tables. Pure data and arithmetic, imported by the
backbone (:mod:`.efficientformer_v2`) and by the code that reads its weights
(:mod:`.efficientformer_v2_weights`)."""
import itertools
from typing import Dict, Optional, Tuple

import torch

# Per size: stage widths, stage depths, the MLP expansion ratio of every
# block, how many trailing blocks of stages 2 and 3 use attention, and the
# default stochastic-depth rate.
ARCH_SETTINGS: Dict[str, dict] = {
    's0': dict(
        widths=(32, 48, 96, 176),
        depths=(2, 2, 6, 4),
        mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
        num_attention_blocks=2,
        drop_path_rate=0.0),
    's1': dict(
        widths=(32, 48, 120, 224),
        depths=(3, 3, 9, 6),
        mlp_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4),
                    (4, 4, 3, 3, 4, 4)),
        num_attention_blocks=2,
        drop_path_rate=0.0),
    's2': dict(
        widths=(32, 64, 144, 288),
        depths=(4, 4, 12, 8),
        mlp_ratios=((4, 4, 4, 4), (4, 4, 4, 4),
                    (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                    (4, 4, 3, 3, 3, 3, 4, 4)),
        num_attention_blocks=4,
        drop_path_rate=0.02),
    'l': dict(
        widths=(40, 80, 192, 384),
        depths=(5, 5, 15, 10),
        mlp_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4),
                    (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                    (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)),
        num_attention_blocks=6,
        drop_path_rate=0.1),
}
# The CGRSeg model built on each size, for messages.
CGRSEG_MODELS = {'s1': 'CGRSeg-T', 's2': 'CGRSeg-B', 'l': 'CGRSeg-L'}
# Weights whose first dimension is the width of stages 1-4: the stem's last
# conv, the two conv downsamples and the attention downsample's conv branch.
WIDTH_KEYS = ('patch_embed.3.weight', 'network.1.proj.weight',
              'network.3.proj.weight', 'network.5.conv.weight')


def stage_widths(state_dict: Dict[str, torch.Tensor],
                 prefix: str = '') -> Optional[Tuple[int, ...]]:
    """The four stage widths of EfficientFormerV2 weights (keys after
    ``prefix``), or None if the weights lack the keys."""
    keys = [prefix + key for key in WIDTH_KEYS]
    if not all(key in state_dict for key in keys):
        return None
    return tuple(state_dict[key].shape[0] for key in keys)


def arch_of_widths(widths: Tuple[int, ...]) -> Optional[str]:
    """The ``ARCH_SETTINGS`` size with these stage widths, or None."""
    return next((arch for arch, setting in ARCH_SETTINGS.items()
                 if setting['widths'] == widths), None)


def arch_label(arch: str) -> str:
    """``'s1 (CGRSeg-T)'``: the size and the CGRSeg model built on it."""
    model = CGRSEG_MODELS.get(arch)
    return f'{arch} ({model})' if model else arch


def relative_offset_index(query_res: int, key_res: int,
                          stride: int) -> Tuple[torch.Tensor, int]:
    """Index of the (|dy|, |dx|) offset between every query and key position.

    Queries lie on a ``query_res``² grid whose coordinates are scaled by
    ``stride``, keys on a ``key_res``² grid. Offsets are numbered in the order
    in which they first occur when queries and keys are enumerated row-major,
    which is the numbering of the released checkpoints' bias tables.

    Returns:
        (index of shape (query_res², key_res²), number of distinct offsets)
    """
    q = torch.tensor(list(itertools.product(range(query_res), repeat=2)))
    k = torch.tensor(list(itertools.product(range(key_res), repeat=2)))
    rel = (q[:, None, :] * stride - k[None, :, :]).abs()
    flat = (rel[..., 0] * (rel[..., 1].max() + 1) + rel[..., 1]).flatten()
    unique, inverse = torch.unique(flat, return_inverse=True)
    positions = torch.arange(flat.numel())
    first_seen = torch.full((len(unique), ), flat.numel()).scatter_reduce(
        0, inverse, positions, reduce='amin')
    rank = torch.empty_like(first_seen)
    rank[first_seen.argsort()] = torch.arange(len(unique))
    return rank[inverse].view(len(q), len(k)), len(unique)

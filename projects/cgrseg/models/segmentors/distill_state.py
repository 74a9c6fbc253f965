"""Keeping the learned distillation parameters (``distill_losses.*``) out of
a distillation segmentor's state dict, so that it is the student's."""
import re

import torch.nn as nn

DISTILL_PREFIX = 'distill_losses.'
_DISTILL_KEY = re.compile(r'(^|\.)distill_losses\.')


def drop_distill_state(module: nn.Module, state_dict: dict, prefix: str,
                       local_metadata: dict) -> None:
    """state_dict post-hook: leave the distillation parameters out."""
    drop = prefix + DISTILL_PREFIX
    for key in [k for k in state_dict if k.startswith(drop)]:
        del state_dict[key]
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        for key in [k for k in metadata
                    if k.startswith(prefix + DISTILL_PREFIX[:-1])]:
            del metadata[key]


def allow_missing_distill_state(module: nn.Module,
                                incompatible_keys) -> None:
    """load_state_dict post-hook: a student state dict is complete."""
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not _DISTILL_KEY.search(k)]

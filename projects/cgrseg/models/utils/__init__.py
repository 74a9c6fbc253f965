from .checkpoint import (CheckpointError, checkpoint_format,
                         describe_checkpoint, load_segmentor_checkpoint,
                         read_checkpoint, state_dict_of)
from .pretrained import load_pretrained_backbone

__all__ = [
    'CheckpointError', 'checkpoint_format', 'describe_checkpoint',
    'load_pretrained_backbone', 'load_segmentor_checkpoint',
    'read_checkpoint', 'state_dict_of'
]

from .checkpoint import (CheckpointError, checkpoint_format,
                         describe_checkpoint, load_segmentor_checkpoint,
                         read_checkpoint, state_dict_of)
from .converters import (check_state_dict, convert_cgrseg_0x,
                         convert_timm_efficientformerv2,
                         efficientformerv2_arch, read_weights)
from .pretrained import (backbone_state_dict, complete_backbone_state_dict,
                         load_pretrained_backbone)

__all__ = [
    'CheckpointError', 'backbone_state_dict', 'check_state_dict',
    'checkpoint_format', 'complete_backbone_state_dict', 'convert_cgrseg_0x',
    'convert_timm_efficientformerv2', 'describe_checkpoint',
    'efficientformerv2_arch', 'load_pretrained_backbone',
    'load_segmentor_checkpoint', 'read_checkpoint',
    'read_weights', 'state_dict_of'
]

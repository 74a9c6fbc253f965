from .efficientformer_v2 import EfficientFormerV2
# Registers EfficientFormerV2's checkpoint layouts with the checkpoint code.
from . import efficientformer_v2_weights  # noqa: F401,E402

__all__ = ['EfficientFormerV2']

from .efficientformer_v2 import EfficientFormerV2

__all__ = ['EfficientFormerV2']

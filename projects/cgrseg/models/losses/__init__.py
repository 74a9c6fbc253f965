from .distill_losses import (ChannelWiseDistillationLoss, DistillLayerError,
                             FeatureMimicLoss, PixelwiseKLLoss)

__all__ = [
    'ChannelWiseDistillationLoss', 'DistillLayerError', 'FeatureMimicLoss',
    'PixelwiseKLLoss'
]

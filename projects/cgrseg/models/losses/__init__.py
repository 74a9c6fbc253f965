from .distill_losses import (ChannelWiseDistillationLoss, DistillShapeError,
                             FeatureMimicLoss, PixelwiseKLLoss)

__all__ = [
    'ChannelWiseDistillationLoss', 'DistillShapeError', 'FeatureMimicLoss',
    'PixelwiseKLLoss'
]

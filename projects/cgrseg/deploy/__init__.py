"""Deployment: the segmentor as a traceable image-to-labels module, and its
export to ONNX."""
from .labels import resize_argmax, upsample_argmax
from .segmentor import OUTPUTS, DeploySegmentor

__all__ = ['DeploySegmentor', 'OUTPUTS', 'resize_argmax', 'upsample_argmax']

"""A segmentor as one tensor-to-tensor module: image in, logits/labels out.

What mmseg's ``SegDataPreProcessor``, ``EncoderDecoder.predict`` ('whole'
mode) and ``postprocess_result`` do around the network, as plain tensor ops
that ``torch.export``, ``torch.compile`` and the ONNX exporter can trace.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models import EncoderDecoder

from .labels import crop, resize_argmax, upsample_argmax

OUTPUTS = ('logits', 'labels')


class DeploySegmentor(nn.Module):
    """Image batch → ``logits`` and/or ``labels`` at the input size.

    The input is what mmseg's ``LoadImageFromFile`` gives, batched: float32
    (N, 3, H, W) BGR pixel values 0-255. Inside: the data preprocessor's
    channel swap and normalisation, its test-time padding (``size`` or
    ``size_divisor``, bottom/right, with ``pad_val``), the segmentor, the
    bilinear resize of the logits to the padded size and the crop back to
    (H, W), as mmseg computes them.

    Outputs (in this order, as chosen by ``outputs``):
        logits: (N, num_classes, H, W) float32.
        labels: (N, H, W) int64, the argmax over classes; when ``logits``
            are not asked for, computed without materialising them: by
            :func:`upsample_argmax` where the padding makes the resize an
            integer upsampling (the CGRSeg configs pad to multiples of 32),
            else by :func:`resize_argmax`.

    Args:
        segmentor: an mmseg ``EncoderDecoder`` in eval mode ('whole' test).
        outputs: any of ``'logits'``, ``'labels'``.
        classes_per_chunk: chunk size of :func:`resize_argmax`.
    """

    def __init__(self,
                 segmentor: EncoderDecoder,
                 outputs: Sequence[str] = OUTPUTS,
                 classes_per_chunk: int = 16):
        super().__init__()
        unknown = set(outputs) - set(OUTPUTS)
        if unknown or not outputs:
            raise ValueError(f'outputs must be a non-empty subset of '
                             f'{OUTPUTS}, got {tuple(outputs)}.')
        mode = segmentor.test_cfg.get('mode', 'whole')
        if mode != 'whole':
            raise ValueError(
                f"the segmentor's test_cfg.mode is {mode!r}; deployment "
                f"runs 'whole' inference (the image at once): set "
                f"model.test_cfg.mode='whole'.")
        self.segmentor = segmentor.eval()
        self.outputs = tuple(o for o in OUTPUTS if o in outputs)
        self.classes_per_chunk = classes_per_chunk
        preprocessor = segmentor.data_preprocessor
        self.bgr_to_rgb = bool(preprocessor.channel_conversion)
        mean = getattr(preprocessor, 'mean', None)
        std = getattr(preprocessor, 'std', None)
        self.register_buffer(
            'mean', mean if mean is not None else torch.zeros(3, 1, 1),
            persistent=False)
        self.register_buffer(
            'std', std if std is not None else torch.ones(3, 1, 1),
            persistent=False)
        self.pad_val = float(preprocessor.pad_val)
        test_cfg = preprocessor.test_cfg or {}
        self.pad_size: Optional[Tuple[int, int]] = test_cfg.get('size')
        self.size_divisor: Optional[int] = test_cfg.get('size_divisor')
        self.align_corners = segmentor.decode_head.align_corners
        self.label_upsampling = self._integer_upsampling()

    def _integer_upsampling(self) -> Optional[int]:
        """The factor by which the logits are resized to the padded input,
        when it is the same integer for every input size (the padding makes
        the size a multiple of the network's output stride), else None.
        Measured with one small forward pass."""
        if self.align_corners or self.size_divisor is None:
            return None
        side = 4 * self.size_divisor
        with torch.no_grad():
            probe = self.network(self.mean.new_zeros(1, 3, side, side))
        stride = side // probe.shape[-1]
        if stride * probe.shape[-1] != side or self.size_divisor % stride:
            return None
        return stride

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone (+ neck) and head: (N, 3, H, W) → low-resolution
        logits."""
        return self.segmentor.decode_head(self.segmentor.extract_feat(x))

    def padding(self, height, width) -> Tuple[int, int]:
        """Bottom and right padding the data preprocessor adds to an
        (H, W) image (written so that it is provably >= 0 for symbolic
        sizes too)."""
        if self.pad_size is not None:
            return (torch.sym_max(self.pad_size[0] - height, 0),
                    torch.sym_max(self.pad_size[1] - width, 0))
        if self.size_divisor is not None:
            return (-height % self.size_divisor, -width % self.size_divisor)
        return 0, 0

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        x = images.flip(1) if self.bgr_to_rgb else images
        x = (x - self.mean) / self.std
        bottom, right = self.padding(height, width)
        x = F.pad(x, (0, right, 0, bottom), value=self.pad_val)
        padded = (height + bottom, width + right)
        low_res = self.network(x)
        result = {}
        if 'logits' in self.outputs:
            logits = F.interpolate(
                low_res, size=padded, mode='bilinear',
                align_corners=self.align_corners)
            result['logits'] = crop(logits, (height, width))
            if 'labels' in self.outputs:
                result['labels'] = result['logits'].argmax(dim=1)
        elif self.label_upsampling is not None:
            result['labels'] = upsample_argmax(
                low_res, self.label_upsampling, (height, width))
        else:
            result['labels'] = resize_argmax(
                low_res, padded, (height, width), self.classes_per_chunk,
                self.align_corners)
        return result

from .distill_encoder_decoder import DistillEncoderDecoder

__all__ = ['DistillEncoderDecoder']

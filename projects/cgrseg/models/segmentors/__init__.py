from .distill_encoder_decoder import (DistillEncoderDecoder, build_teacher,
                                      build_teacher_model, layer_outputs,
                                      student_config, teacher_needs_head)

__all__ = [
    'DistillEncoderDecoder', 'build_teacher', 'build_teacher_model',
    'layer_outputs', 'student_config', 'teacher_needs_head'
]

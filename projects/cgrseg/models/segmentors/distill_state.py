"""Where a distillation checkpoint keeps the learned distillation
parameters (the connectors, ``distill_losses.*``).

A :class:`DistillEncoderDecoder` holds them as ordinary submodules, so its
``state_dict()`` is the student's keys followed by ``distill_losses.*``
(the teacher is not a submodule). A checkpoint file keeps the student alone
under ``state_dict``, so that every student loader (``tools/test.py``,
``mmseg.apis.init_model``, the ONNX exporter) reads it as a plain student
checkpoint, and the connectors beside it under ``distill_state_dict``:
:func:`split_distill_state` on saving, :func:`merge_distill_state` on
loading into a distillation model. Checkpoints written before connectors
were part of ``state_dict()`` have the same layout."""
from collections import OrderedDict

DISTILL_PREFIX = 'distill_losses.'
DISTILL_KEY = 'distill_state_dict'


def split_distill_state(checkpoint: dict) -> None:
    """Moves the ``distill_losses.*`` entries of ``checkpoint['state_dict']``
    to ``checkpoint['distill_state_dict']`` (none: nothing changes)."""
    state_dict = checkpoint['state_dict']
    keys = [k for k in state_dict if k.startswith(DISTILL_PREFIX)]
    if keys:
        checkpoint[DISTILL_KEY] = OrderedDict(
            (k, state_dict.pop(k)) for k in keys)


def merge_distill_state(checkpoint: dict) -> None:
    """Moves ``checkpoint['distill_state_dict']`` back into
    ``checkpoint['state_dict']``, for loading into a distillation model."""
    if DISTILL_KEY in checkpoint:
        checkpoint['state_dict'].update(checkpoint.pop(DISTILL_KEY))

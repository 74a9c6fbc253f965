"""CGRSeg for mmsegmentation 1.x.

Importing this package changes the process as follows (nothing else):

* registers its classes in mmseg's registries (the EfficientFormerV2
  backbone, the CGRSeg head, the distillation segmentor and losses, the demo
  dataset, the optimizer wrappers and constructor, the hooks) and the
  ``local_atomic`` file backend in MMEngine's (:mod:`.engine.atomic_backend`);
* replaces MMEngine's checkpoint loaders for every scheme its
  ``CheckpointLoader`` knows (local paths, ``http(s)://``, ``open-mmlab://``,
  ``torchvision://``, ``mmcls://``, ``s3://``, ...; ``pavi://`` is refused)
  with readers that use ``torch.load(weights_only=True)`` or
  ``safetensors`` and name the file in one-line errors, for every caller
  (``load_from``, ``--resume``, ``init_cfg``, ``mmseg.apis.init_model``;
  :mod:`.models.utils.checkpoint_schemes`);
* lets ``torch.load(weights_only=True)`` read MMEngine checkpoints, by
  adding exactly the types they hold to torch's safe globals
  (:mod:`.engine.checkpoint_safety`).

Warnings and log records are left alone (the tools filter libraries'
notices themselves, :mod:`.engine.library_notices`)."""
from .datasets import *  # noqa: F401,F403
from .engine import *  # noqa: F401,F403
from .engine.checkpoint_safety import allow_mmengine_checkpoints
from .models import *  # noqa: F401,F403
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']

"""CGRSeg for mmsegmentation 1.x.

Importing this package registers the EfficientFormerV2 backbone, the CGRSeg
head, the demo dataset, and the optimizer wrappers and hooks in mmseg's
registries, and lets ``torch.load(weights_only=True)`` read MMEngine
checkpoints (see :mod:`cgrseg.engine.checkpoint_safety`)."""
from .datasets import *  # noqa: F401,F403
from .engine import *  # noqa: F401,F403
from .engine.checkpoint_safety import allow_mmengine_checkpoints
from .models import *  # noqa: F401,F403
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']

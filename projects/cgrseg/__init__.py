"""CGRSeg for mmsegmentation 1.x.

Importing this package registers the EfficientFormerV2 backbone, the CGRSeg
head, the demo dataset, and the optimizer wrappers and hooks in mmseg's
registries, and lets ``torch.load(weights_only=True)`` read MMEngine
checkpoints (see :mod:`cgrseg.engine.checkpoint_safety`)."""
import warnings

# Notices about the libraries' own internals that users of this package
# cannot act on; each is printed on every import or model build. Set before
# the imports below, which import mmengine and mmseg.
for _notice in ('pkg_resources is deprecated',
                '``build_loss`` would be deprecated',
                'Default ``avg_non_ignore`` is False'):
    warnings.filterwarnings('ignore', message=_notice)

from .datasets import *  # noqa: E402,F401,F403
from .engine import *  # noqa: E402,F401,F403
from .engine.checkpoint_safety import allow_mmengine_checkpoints  # noqa: E402
from .models import *  # noqa: E402,F401,F403
from .version import __version__  # noqa: E402

allow_mmengine_checkpoints()

__all__ = ['__version__']

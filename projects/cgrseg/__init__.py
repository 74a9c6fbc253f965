"""CGRSeg for mmsegmentation 1.x: importing this package registers the
EfficientFormerV2 backbone and the CGRSeg head in mmseg's ``MODELS``."""
from .models import *  # noqa: F401,F403
from .version import __version__

__all__ = ['__version__']

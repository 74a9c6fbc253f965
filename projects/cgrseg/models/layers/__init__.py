from .dpg import DPGBlock
from .fusion import FuseBlockMulti, PyramidPoolAgg
from .rcm import RCA, RCM, ConvMlp

__all__ = [
    'ConvMlp', 'DPGBlock', 'FuseBlockMulti', 'PyramidPoolAgg', 'RCA', 'RCM'
]

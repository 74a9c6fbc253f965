from .dpg import DPGHead
from .fusion import FuseBlockMulti, PyramidPoolAgg
from .rcm import RCA, RCM, ConvMlp

__all__ = ['ConvMlp', 'DPGHead', 'FuseBlockMulti', 'PyramidPoolAgg', 'RCA', 'RCM']

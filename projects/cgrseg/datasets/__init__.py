from .checks import check_data_roots
from .shapes import SyntheticShapesDataset, generate_shapes

__all__ = ['SyntheticShapesDataset', 'check_data_roots', 'generate_shapes']

from .checks import (DatasetError, check_data_roots,
                     check_dataset_config)
from .file_checks import check_dataset_files
from .shapes import SyntheticShapesDataset, generate_shapes

__all__ = [
    'DatasetError', 'SyntheticShapesDataset', 'check_data_roots',
    'check_dataset_config', 'check_dataset_files', 'generate_shapes'
]

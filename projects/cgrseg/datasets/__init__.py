from .checks import (DatasetError, check_data_roots,
                     check_dataset_config)
from .file_checks import check_dataset_files
from .transforms import RecordedRandomCrop
from .shapes import SyntheticShapesDataset, generate_shapes

__all__ = [
    'DatasetError', 'RecordedRandomCrop', 'SyntheticShapesDataset',
    'check_data_roots', 'check_dataset_config', 'check_dataset_files',
    'generate_shapes'
]

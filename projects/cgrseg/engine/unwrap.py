"""The segmentor inside MMEngine's model wrappers."""
import torch.nn as nn
from mmengine.model import BaseTTAModel, is_model_wrapper


def unwrap_model(model: nn.Module) -> nn.Module:
    """``model`` without its wrappers, however nested: DDP and the other
    MMEngine model wrappers (``is_model_wrapper``), and test-time
    augmentation (``BaseTTAModel``, ``tools/test.py --tta``); both keep the
    wrapped model as ``.module``."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model

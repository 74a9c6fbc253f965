"""What model code needs to know about being traced."""
import torch


def has_symbolic_size(*sizes) -> bool:
    """Whether any size is symbolic: the model is being traced (torch.export,
    the ONNX exporter) for inputs of any size, not run on one."""
    return any(isinstance(size, torch.SymInt) for size in sizes)

import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    """The fixtures were recorded with 2 threads; pin it for comparable noise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)

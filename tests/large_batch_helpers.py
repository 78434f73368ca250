"""Shared by the large-batch tests (test_chunked*, test_optim, test_precision)."""

import pytest
import torch

from ecgfast.models import EncoderConfig

#: A small encoder with dropout on, for fast CPU steps.
TINY = EncoderConfig(filters=(8, 12, 16), kernel_sizes=(7, 4, 3), backend="eager", dropout=0.2,
                     residual="all", attention=True)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""Fixtures shared by the whole suite."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread.

    Tiny batches gain nothing from a second thread, and on an oversubscribed CPU the
    OpenMP threads spin waiting on each other (measured: up to 14x slower).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

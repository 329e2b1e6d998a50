"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch intra-op thread: fastest for these tiny networks, and runs stay comparable on a shared machine
    (several threads on a busy 2-core machine can be many times slower). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

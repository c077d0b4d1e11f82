"""Tiny tensors run fastest on one thread; restore the setting for the rest of the session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test of this folder with one intra-op thread (the ops are tiny)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Fixtures for the model tests: synthetic montages on a head-sized sphere and signal batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from eegfm.models import create_model

HEAD_RADIUS_M = 0.09


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run model tests on one thread: tiny-model ops are too small to gain from a second one,
    and on a shared 2-core machine OpenMP threads that wait on each other run ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def scalp_positions(n_channels: int, generator: torch.Generator) -> torch.Tensor:
    """``(n_channels, 3)`` distinct random points on the upper part of a 9 cm sphere."""
    direction = torch.randn(n_channels, 3, generator=generator)
    direction[:, 2] = direction[:, 2].abs() + 0.2
    return HEAD_RADIUS_M * direction / direction.norm(dim=1, keepdim=True)


@pytest.fixture
def make_batch() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Factory: ``make_batch(batch, channels, seconds, seed)`` -> (x µV, coords m)."""

    def make(batch: int, channels: int, seconds: int = 4, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        x = 20.0 * torch.randn(batch, channels, 200 * seconds, generator=generator)
        coords = torch.stack([scalp_positions(channels, generator) for _ in range(batch)])
        return x, coords

    return make


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """A deterministic eegfm_tiny encoder in eval mode."""
    torch.manual_seed(0)
    return create_model("eegfm_tiny").eval()

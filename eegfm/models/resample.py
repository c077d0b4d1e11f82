"""Band-limited resampling in torch (polyphase windowed sinc), usable inside a model's forward.

torchaudio would provide this, but its wheels pin one torch release each; this small filter
keeps the models free of that pin.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F


def _ratio(orig_hz: float, new_hz: float) -> tuple[int, int]:
    """Reduced integer ratio ``(up, down)`` with ``new / orig = up / down``."""
    if orig_hz <= 0 or new_hz <= 0:
        raise ValueError(f"sampling rates must be positive, got {orig_hz} -> {new_hz}")
    fraction = Fraction(new_hz / orig_hz).limit_denominator(1000)
    return fraction.numerator, fraction.denominator


def _kernel(up: int, down: int, zero_crossings: int, rolloff: float,
            dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
    """Polyphase filter bank ``(up, 1, 2 * width + down)`` and its half-width in input samples.

    Output sample ``q * up + j`` sits at input position ``(q * up + j) * down / up``; phase j
    weighs the inputs around ``q * down + j * down / up`` with a Hann-windowed sinc whose
    cut-off is ``rolloff`` times the lower of the two Nyquist frequencies.
    """
    cutoff = min(1.0, up / down) * rolloff  # in cycles per input sample * 2 (Nyquist = 1)
    width = math.ceil(zero_crossings / cutoff)
    taps = torch.arange(-width, width + down, dtype=torch.float64)  # input offsets
    phases = torch.arange(up, dtype=torch.float64)[:, None] * down / up
    t = taps[None, :] - phases  # (up, K) distance from each output's position
    window = torch.where(t.abs() <= width, torch.cos(math.pi * t / (2 * width)) ** 2, 0.0)
    kernel = cutoff * torch.sinc(cutoff * t) * window
    return kernel[:, None, :].to(dtype=dtype, device=device), width


def resample(
    x: torch.Tensor, orig_hz: float, new_hz: float, *, zero_crossings: int = 8,
    rolloff: float = 0.95,
) -> torch.Tensor:
    """Resample ``x (..., T)`` from ``orig_hz`` to ``new_hz``; ``ceil(T * new / orig)`` samples out.

    Anti-aliased (the cut-off is below the lower Nyquist); edges are zero-padded, so the first
    and last ``zero_crossings`` samples of the output are slightly attenuated.
    """
    up, down = _ratio(orig_hz, new_hz)
    if up == down:
        return x
    shape = x.shape
    T = shape[-1]
    kernel, width = _kernel(up, down, zero_crossings, rolloff, x.dtype, x.device)
    flat = x.reshape(-1, 1, T)
    n_out = math.ceil(T * up / down)
    n_blocks = math.ceil(n_out / up)
    right = max(0, (n_blocks - 1) * down + kernel.shape[-1] - (T + width))
    padded = F.pad(flat, (width, right))
    out = F.conv1d(padded, kernel, stride=down)  # (N, up, n_blocks): phase j of block q
    out = out[..., :n_blocks].transpose(1, 2).reshape(flat.shape[0], -1)[:, :n_out]
    return out.reshape(*shape[:-1], n_out)

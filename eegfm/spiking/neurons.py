"""Spiking neurons: multi-step LIF with surrogate gradients, and integer neurons.

Every spiking module works in *step form*: tensors carry a leading step dimension
``(S, ...)``. For LIF ``S = T`` real timesteps; for integer neurons ``S = 1`` in training and
``S = D`` binary virtual timesteps in spike-driven inference (see :class:`IntegerNeuron`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from eegfm.spiking.meter import Metered, masked_sum

SURROGATES = ("sigmoid", "atan")
RESETS = ("hard", "soft")


@dataclass
class NeuronConfig:
    """Neuron hyper-parameters shared by every spiking layer of a head.

    ``timesteps`` (T) and the LIF fields apply to ``spiking='lif'``; ``max_level`` (D) to
    ``spiking='int'`` (which always runs one training step).
    """

    timesteps: int = 4
    tau: float = 2.0
    threshold: float = 0.5  # a unit-variance input then fires ~15% of steps at T=4, tau=2
    reset: str = "hard"
    v_reset: float = 0.0
    detach_reset: bool = True
    surrogate: str = "sigmoid"
    surrogate_slope: float = 4.0
    max_level: int = 4

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.tau < 1.0:
            raise ValueError(f"tau must be >= 1 (tau=1 means no leak), got {self.tau}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {self.surrogate!r}")
        if self.surrogate_slope <= 0:
            raise ValueError(f"surrogate_slope must be > 0, got {self.surrogate_slope}")
        if self.max_level < 1:
            raise ValueError(f"max_level (D) must be >= 1, got {self.max_level}")


def surrogate_grad(x: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
    """Derivative of the smooth stand-in for the Heaviside step, evaluated at ``x = v - θ``."""
    if kind == "sigmoid":
        sig = torch.sigmoid(slope * x)
        return slope * sig * (1.0 - sig)
    if kind == "atan":
        return (slope / 2.0) / (1.0 + (math.pi / 2.0 * slope * x) ** 2)
    raise ValueError(f"unknown surrogate {kind!r}; choose one of {SURROGATES}")


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside step forward (fires when ``x >= 0``), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.slope = kind, slope
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * surrogate_grad(x, ctx.kind, ctx.slope), None, None


def spike(x: torch.Tensor, surrogate: str = "sigmoid", slope: float = 4.0) -> torch.Tensor:
    """Binary spikes ``1[x >= 0]`` with a surrogate gradient (sigmoid or atan, given slope)."""
    return _SurrogateSpike.apply(x, surrogate, slope)


class LIFNeuron(nn.Module, Metered):
    """Multi-step leaky integrate-and-fire neuron, input and output ``(T, ...)``.

    Charge: ``v_t = v_{t-1} + (x_t - (v_{t-1} - v_reset)) / tau``; fire ``s_t = 1[v_t >= θ]``;
    reset: hard ``v_t <- v_reset`` where it fired, soft ``v_t <- v_t - θ``; the reset can be
    detached from the graph (``detach_reset``). With ``T = 1`` and ``v_0 = v_reset = 0`` the
    neuron fires iff ``x >= tau·θ``: as ``θ -> 0+`` it becomes the Heaviside step ``1[x > 0]``
    (a sign binariser) and its gradient is the surrogate at ``x/tau``, divided by ``tau``.
    """

    def __init__(self, config: NeuronConfig | None = None, threshold: float | None = None):
        super().__init__()
        self.config = config or NeuronConfig()
        self.threshold = self.config.threshold if threshold is None else float(threshold)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes ``(T, ...)`` for input currents ``(T, ...)``; ``valid`` only feeds the meters."""
        cfg = self.config
        v = torch.full_like(x[0], cfg.v_reset)
        out = []
        for x_t in x:
            v = v + (x_t - (v - cfg.v_reset)) / cfg.tau
            s = spike(v - self.threshold, cfg.surrogate, cfg.surrogate_slope)
            s_reset = s.detach() if cfg.detach_reset else s
            if cfg.reset == "hard":
                v = v * (1.0 - s_reset) + cfg.v_reset * s_reset
            else:
                v = v - self.threshold * s_reset
            out.append(s)
        spikes = torch.stack(out)
        if self._meter is not None:
            total, neurons = masked_sum(spikes, valid)
            self._record_neuron(total, neurons, steps=spikes.shape[0])
        return spikes

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"T={cfg.timesteps}, tau={cfg.tau}, threshold={self.threshold}, reset={cfg.reset}, "
                f"surrogate={cfg.surrogate}({cfg.surrogate_slope})")


class _RoundSTE(torch.autograd.Function):
    """Round to the nearest integer, identity gradient (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out


class IntegerNeuron(nn.Module, Metered):
    """Integer-valued neuron ``S = round(clip(U, 0, D))``, straight-through gradient.

    The gradient passes unchanged inside ``[0, D]`` and is zero outside (the clip's own
    gradient). With ``spike_driven = True`` (set by :func:`eegfm.spiking.spike_driven`) the
    neuron emits each integer as ``D`` binary virtual timesteps ``s_t = 1[S >= t]``: input
    ``(1, ...)``, output ``(D, ...)``; the next :class:`SynapticLinear` integrates them back.
    """

    def __init__(self, config: NeuronConfig | None = None):
        super().__init__()
        self.config = config or NeuronConfig()
        self.spike_driven = False

    @property
    def max_level(self) -> int:
        """D: the largest integer a neuron may emit (spikes per step in spike-driven mode)."""
        return self.config.max_level

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Integer activations ``(1, ...)``, or their binary expansion ``(D, ...)``."""
        D = self.max_level
        level = _RoundSTE.apply(x.clamp(0.0, float(D)))
        if self._meter is not None:
            total, neurons = masked_sum(level, valid)
            self._record_neuron(total, neurons, steps=D * level.shape[0])
        if not self.spike_driven:
            return level
        if x.shape[0] != 1:
            raise ValueError("spike-driven expansion needs one integer step, got a step "
                             f"dimension of {x.shape[0]}")
        steps = torch.arange(1, D + 1, device=x.device, dtype=x.dtype)
        steps = steps.view(D, *([1] * (x.dim() - 1)))
        return (level >= steps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"D={self.max_level}, spike_driven={self.spike_driven}"


def make_neuron(spiking: str, config: NeuronConfig | None = None) -> nn.Module:
    """Hidden-layer activation: GELU (``'none'``), LIF (``'lif'``) or integer (``'int'``)."""
    if spiking == "none":
        return nn.GELU()
    if spiking == "lif":
        return LIFNeuron(config)
    if spiking == "int":
        return IntegerNeuron(config)
    raise ValueError(f"spiking must be one of 'none', 'lif', 'int', got {spiking!r}")

"""Operation meters: layers report spikes and operations while an :class:`OpMeter` is attached.

Counting model (the one used by Spikformer / Spike-driven Transformer energy estimates):

- a synaptic operation whose input operand is real-valued costs ``FLOPs x steps`` MACs;
- one whose input operand is spikes costs ``SOPs = firing rate x steps x FLOPs`` accumulates,
  where ``FLOPs`` is the operation's multiply-accumulate count for one step as an ANN and the
  firing rate is spikes per input neuron per (virtual) timestep. For a linear layer this is
  exactly ``(number of input spikes) x fan-out``;
- neuron updates, normalisation, pooling and element-wise operations are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn


def masked_sum(x: torch.Tensor, valid: torch.Tensor | None) -> tuple[float, float]:
    """(sum of a step-form tensor ``(S, ...)`` over valid positions, valid elements per step).

    ``valid`` (bool) aligns with ``x.shape[1:]`` from the left, e.g. ``(B, N)`` for
    ``x: (S, B, N, D)``; None means every position is valid.
    """
    if valid is None:
        return float(x.detach().sum()), float(x[0].numel())
    mask = valid.to(x.dtype).view(*valid.shape, *([1] * (x.dim() - 1 - valid.dim())))
    mask = mask.expand(x.shape[1:])
    return float((x.detach() * mask).sum()), float(mask.sum())


class Metered:
    """Mixin for modules that report their operations to an attached :class:`OpMeter`."""

    _meter: OpMeter | None = None
    _meter_name: str = ""

    def _record_synapse(self, part: str, *, flops_per_step: float, steps: int,
                        spikes: float | None = None, inputs_per_step: float | None = None) -> None:
        """Report one synaptic operation (``spikes=None`` means a real-valued input: MACs)."""
        if self._meter is not None:
            name = ".".join(p for p in (self._meter_name, part) if p) or type(self).__name__
            self._meter.add_synapse(name, flops_per_step, steps, spikes, inputs_per_step)

    def _record_neuron(self, spikes: float, neurons_per_step: float, steps: int) -> None:
        """Report the spikes a neuron layer emitted over ``steps`` (virtual) timesteps."""
        if self._meter is not None:
            name = self._meter_name or type(self).__name__
            self._meter.add_neuron(name, spikes, neurons_per_step, steps)


class OpMeter:
    """Context manager that collects per-layer MACs, SOPs and firing rates of a model's forward."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.synapses: dict[str, dict[str, float]] = defaultdict(
            lambda: {"macs": 0.0, "sops": 0.0, "flops": 0.0, "spikes": 0.0, "inputs": 0.0,
                     "spike_input": 0.0})
        self.neurons: dict[str, dict[str, float]] = defaultdict(
            lambda: {"spikes": 0.0, "neuron_steps": 0.0})

    def __enter__(self) -> OpMeter:
        for name, module in self.model.named_modules():
            if isinstance(module, Metered):
                module._meter, module._meter_name = self, name
        return self

    def __exit__(self, *exc: Any) -> None:
        for module in self.model.modules():
            if isinstance(module, Metered):
                module._meter = None

    def add_synapse(self, name: str, flops_per_step: float, steps: int, spikes: float | None,
                    inputs_per_step: float | None) -> None:
        """Accumulate one synaptic operation (see the module docstring for the counting rule)."""
        entry = self.synapses[name]
        entry["flops"] += flops_per_step
        if spikes is None:
            entry["macs"] += flops_per_step * steps
            return
        if not inputs_per_step:
            return
        rate = spikes / (inputs_per_step * steps)
        entry["sops"] += rate * steps * flops_per_step
        entry["spikes"] += spikes
        entry["inputs"] += inputs_per_step * steps
        entry["spike_input"] = 1.0

    def add_neuron(self, name: str, spikes: float, neurons_per_step: float, steps: int) -> None:
        """Accumulate spikes of a neuron layer."""
        entry = self.neurons[name]
        entry["spikes"] += spikes
        entry["neuron_steps"] += neurons_per_step * steps

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per (virtual) timestep, by neuron layer."""
        return {name: e["spikes"] / e["neuron_steps"] if e["neuron_steps"] else 0.0
                for name, e in self.neurons.items()}

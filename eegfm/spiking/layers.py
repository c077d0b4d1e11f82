"""Synaptic layers and MLPs in step form, shared by the ANN, LIF and integer heads.

An ANN head is the same network with one step (``S = 1``) and GELU activations, so the three
variants share weights names and code paths; only the neurons and the meters differ.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.spiking.meter import Metered, masked_sum
from eegfm.spiking.neurons import IntegerNeuron, NeuronConfig, make_neuron

INPUT_KINDS = ("real", "spike", "integer")


def input_kind(spiking: str) -> str:
    """What a layer behind a neuron receives: real values, binary spikes or integers."""
    return {"none": "real", "lif": "spike", "int": "integer"}[spiking]


class SynapticLinear(nn.Linear, Metered):
    """Linear layer on step-form input ``(S, ..., in)`` that meters MACs (real) or SOPs (spikes).

    ``input_kind='integer'`` layers accumulate in float64 outside training: every product of a
    float32 weight with an integer ``<= D`` is exact there, so the sum is the exact real value
    whenever :func:`accumulation_is_exact` holds; in spike-driven mode (``spike_driven = True``)
    the input is ``D`` binary virtual steps which are integrated back into one step, and the
    two paths round the same exact value to float32: bit-identical outputs.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 input_kind: str = "real", max_level: int = 4):
        super().__init__(in_features, out_features, bias=bias)
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
        self.input_kind = input_kind
        self.max_level = max_level
        self.spike_driven = False

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(S, ..., in) -> (S, ..., out)``; ``valid`` (see ``masked_sum``) feeds the meters."""
        if self.input_kind == "integer" and (self.spike_driven or not self.training):
            out = self._exact_forward(x)
        else:
            out = super().forward(x)
        if self._meter is not None:
            self._meter_forward(x, valid)
        return out

    def _exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float64 accumulation (integrating virtual steps first in spike-driven mode)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            weight = self.weight.double()
            bias = None if self.bias is None else self.bias.double()
            if self.spike_driven:
                out = F.linear(x.double(), weight).sum(0, keepdim=True)
                out = out if bias is None else out + bias
            else:
                out = F.linear(x.double(), weight, bias)
        return out.to(self.weight.dtype)

    def _meter_forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> None:
        steps = x.shape[0]
        total, inputs = masked_sum(x, valid)
        flops = inputs * self.out_features  # one multiply-accumulate per input and output
        if self.input_kind == "real":
            self._record_synapse("", flops_per_step=flops, steps=steps)
            return
        if self.input_kind == "integer" and not self.spike_driven:
            # An integer is D binary virtual steps: spikes = the integers' sum, steps = D.
            steps = steps * self.max_level
        self._record_synapse("", flops_per_step=flops, steps=steps, spikes=total,
                             inputs_per_step=inputs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_kind={self.input_kind}"


def accumulation_is_exact(layer: SynapticLinear) -> bool:
    """True when float64 accumulation of this integer-input layer is exact for any input.

    All terms ``w_ij * k`` (``0 <= k <= D``) and ``b_i`` are multiples of ``q_i``, the smallest
    float32 ulp among row ``i``'s non-zero weights and bias, and every partial sum is bounded by
    ``D * sum_j |w_ij| + |b_i|``; float64 holds every multiple of ``q_i`` up to ``2**53 * q_i``.
    """
    with torch.no_grad():
        weight = layer.weight.detach().float()
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(
            weight.shape[0], device=weight.device)
        terms = torch.cat([weight, bias[:, None]], dim=1).double()
        _, exponent = torch.frexp(terms)
        exponent = torch.where(terms != 0, exponent, torch.full_like(exponent, 10_000))
        quantum = torch.ldexp(torch.ones(len(terms), dtype=torch.float64),
                              exponent.min(dim=1).values - 24)
        bound = layer.max_level * weight.double().abs().sum(1) + bias.double().abs()
        return bool((bound < quantum * 2.0**53).all())


@contextmanager
def spike_driven(model: nn.Module) -> Iterator[nn.Module]:
    """Run integer neurons as ``D`` binary virtual timesteps (spike-driven inference).

    Warns when a layer's float64 accumulation cannot be guaranteed exact
    (:func:`accumulation_is_exact`), since outputs could then differ in the last bit.
    """
    switched = [m for m in model.modules() if isinstance(m, IntegerNeuron | SynapticLinear)]
    for name, module in model.named_modules():
        if (isinstance(module, SynapticLinear) and module.input_kind == "integer"
                and not accumulation_is_exact(module)):
            warnings.warn(f"layer {name}: weight dynamic range too wide for exact float64 "
                          "accumulation; spike-driven outputs may differ in the last bit",
                          stacklevel=3)
    previous = [m.spike_driven for m in switched]
    for module in switched:
        module.spike_driven = True
    try:
        yield model
    finally:
        for module, flag in zip(switched, previous, strict=True):
            module.spike_driven = flag


class StepEncoder(nn.Module):
    """Turn real features ``(B, ...)`` into step form: ANN ``(1, B, ...)``, LIF spikes over T
    steps of constant input current, or integer activations ``(1, B, ...)``."""

    def __init__(self, spiking: str, config: NeuronConfig | None = None):
        super().__init__()
        self.spiking = spiking
        self.config = config or NeuronConfig()
        self.neuron = None if spiking == "none" else make_neuron(spiking, self.config)

    @property
    def steps(self) -> int:
        """Number of steps of the encoded output (1 except for LIF)."""
        return self.config.timesteps if self.spiking == "lif" else 1

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, ...) -> (S, B, ...)``."""
        x = x.unsqueeze(0)
        if self.neuron is None:
            return x
        x = x.expand(self.steps, *x.shape[1:])
        return self.neuron(x, valid)


class StepBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last dimension of step-form input ``(S, ..., F)``.

    Statistics pool steps and samples (as in Spikformer's BN before LIF); at inference it is a
    per-feature affine map that folds into the preceding linear layer, so it costs no operation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(S, ..., F) -> (S, ..., F)``; a single row (an expert routed one sample) is
        normalised with the running statistics, since a batch of one has no variance."""
        rows = x.reshape(-1, x.shape[-1])
        if self.training and rows.shape[0] == 1:
            return F.batch_norm(rows, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps).view_as(x)
        return super().forward(rows).view_as(x)


class StepMLP(nn.Module):
    """Linear → [BatchNorm] → dropout → activation → ... → Linear readout, on step-form input.

    Hidden activations are GELU (ANN) or LIF / integer neurons, which are preceded by BatchNorm
    so that their membrane inputs start near threshold. The output is the readout layer's
    step-form synaptic current; the caller averages it over steps (``readout``), i.e. the
    membrane potential of a non-leaky, non-firing integrator divided by the number of steps.
    """

    def __init__(self, in_features: int, hidden: list[int] | tuple[int, ...], out_features: int,
                 *, spiking: str = "none", config: NeuronConfig | None = None,
                 dropout: float = 0.0, output_neuron: bool = False):
        super().__init__()
        self.config = config or NeuronConfig()
        kind = input_kind(spiking)
        dims = [in_features, *hidden, out_features]
        layers: dict[str, nn.Module] = {}  # named fc1, norm1, drop1, act1, fc2, ... for reports
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims), start=1):
            layers[f"fc{i}"] = SynapticLinear(d_in, d_out, input_kind=kind,
                                              max_level=self.config.max_level)
            if i < len(dims) - 1 or output_neuron:
                if spiking != "none":
                    layers[f"norm{i}"] = StepBatchNorm(d_out)
                if dropout > 0:
                    layers[f"drop{i}"] = nn.Dropout(dropout)
                layers[f"act{i}"] = make_neuron(spiking, self.config)
        self.layers = nn.ModuleDict(layers)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(S, ..., in) -> (S, ..., out)``; inside spike-driven expansion the neurons emit D
        virtual steps that the next linear layer integrates back into one."""
        for layer in self.layers.values():
            x = layer(x, valid) if isinstance(layer, Metered) else layer(x)
        return x


def readout(x: torch.Tensor) -> torch.Tensor:
    """Average step-form output currents over steps: ``(S, ...) -> (...)``."""
    return x.mean(0)

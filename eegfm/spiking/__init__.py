"""Spiking neurons, spiking attention and firing-rate / energy meters for the heads (torch only)."""

from eegfm.spiking.attention import AttentionPool, SpikingAttentionPool, spiking_attention
from eegfm.spiking.energy import (
    ENERGY_LABEL,
    ENERGY_PER_AC_PJ,
    ENERGY_PER_MAC_PJ,
    energy_report,
)
from eegfm.spiking.layers import (
    StepEncoder,
    StepMLP,
    SynapticLinear,
    accumulation_is_exact,
    readout,
    spike_driven,
)
from eegfm.spiking.meter import Metered, OpMeter
from eegfm.spiking.neurons import (
    IntegerNeuron,
    LIFNeuron,
    NeuronConfig,
    make_neuron,
    spike,
    surrogate_grad,
)

SPIKING_MODES = ("none", "lif", "int")

__all__ = [
    "ENERGY_LABEL",
    "ENERGY_PER_AC_PJ",
    "ENERGY_PER_MAC_PJ",
    "SPIKING_MODES",
    "AttentionPool",
    "IntegerNeuron",
    "LIFNeuron",
    "Metered",
    "NeuronConfig",
    "OpMeter",
    "SpikingAttentionPool",
    "StepEncoder",
    "StepMLP",
    "SynapticLinear",
    "accumulation_is_exact",
    "energy_report",
    "make_neuron",
    "readout",
    "spike",
    "spike_driven",
    "spiking_attention",
    "surrogate_grad",
]

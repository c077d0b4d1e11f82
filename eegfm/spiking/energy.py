"""Firing rates, synaptic operations and a theoretical energy estimate, next to the ANN head.

Energy per sample = 4.6 pJ x MACs + 0.9 pJ x SOPs (45 nm CMOS figures of Horowitz, ISSCC 2014,
as used by Spikformer and the Spike-driven Transformers). The estimate is *theoretical and
compute-only*: no memory access, data movement, neuron updates, normalisation or pooling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from eegfm.spiking.layers import spike_driven
from eegfm.spiking.meter import OpMeter

ENERGY_PER_MAC_PJ = 4.6
ENERGY_PER_AC_PJ = 0.9
ENERGY_LABEL = "theoretical, compute-only (45 nm: 4.6 pJ/MAC, 0.9 pJ/AC)"


def _run_metered(model: nn.Module, tokens: torch.Tensor,
                 channel_mask: torch.Tensor | None) -> OpMeter:
    """Forward ``model`` once in eval mode under a meter (integer heads run spike-driven)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), OpMeter(model) as meter:
            if getattr(model, "spiking", "none") == "int":
                with spike_driven(model):
                    model(tokens, channel_mask)
            else:
                model(tokens, channel_mask)
    finally:
        model.train(was_training)
    return meter


def _layer_table(meter: OpMeter, n_samples: int) -> dict[str, dict[str, Any]]:
    """Per-layer costs per sample."""
    layers = {}
    for name, entry in meter.synapses.items():
        spiking_input = bool(entry["spike_input"])
        macs, sops = entry["macs"] / n_samples, entry["sops"] / n_samples
        layers[name] = {
            "input": "spikes" if spiking_input else "real",
            "firing_rate": entry["spikes"] / entry["inputs"] if spiking_input and entry["inputs"]
            else None,
            "flops": entry["flops"] / n_samples,
            "macs": macs,
            "sops": sops,
            "energy_pj": ENERGY_PER_MAC_PJ * macs + ENERGY_PER_AC_PJ * sops,
        }
    return layers


def energy_report(head: nn.Module, tokens: torch.Tensor, channel_mask: torch.Tensor | None = None,
                  *, ann_head: nn.Module | None = None) -> dict[str, Any]:
    """Per-layer firing rates, SOPs, MACs and energy (pJ per sample) of a head, with its ANN twin.

    ``ann_head`` is the same architecture without spikes; by default ``head.ann_twin()`` (heads
    built by :func:`eegfm.heads.create_head`), or the head itself when it does not spike.
    Integer heads are measured in spike-driven mode (binary virtual timesteps).
    """
    n_samples = int(tokens.shape[0])
    meter = _run_metered(head, tokens, channel_mask)
    layers = _layer_table(meter, n_samples)
    spiking = getattr(head, "spiking", "none")
    if ann_head is None:
        ann_head = head.ann_twin() if spiking != "none" and hasattr(head, "ann_twin") else head
    ann_layers = (layers if ann_head is head
                  else _layer_table(_run_metered(ann_head, tokens, channel_mask), n_samples))
    macs = sum(layer["macs"] for layer in layers.values())
    sops = sum(layer["sops"] for layer in layers.values())
    energy = sum(layer["energy_pj"] for layer in layers.values())
    ann_macs = sum(layer["macs"] for layer in ann_layers.values())
    ann_energy = sum(layer["energy_pj"] for layer in ann_layers.values())
    config = getattr(head, "neuron_config", None)
    return {
        "label": ENERGY_LABEL,
        "spiking": spiking,
        "timesteps": config.timesteps if spiking == "lif" and config is not None else 1,
        "virtual_timesteps": config.max_level if spiking == "int" and config is not None else None,
        "n_samples": n_samples,
        "firing_rates": meter.firing_rates(),
        "layers": layers,
        "macs": macs,
        "sops": sops,
        "energy_pj": energy,
        "ann": {"macs": ann_macs, "energy_pj": ann_energy,
                "layers": {name: layer["macs"] for name, layer in ann_layers.items()}},
        "energy_ratio": energy / ann_energy if ann_energy else float("nan"),
    }

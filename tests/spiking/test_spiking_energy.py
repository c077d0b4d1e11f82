"""Firing-rate, SOP, MAC and energy counters against a network computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eegfm.spiking import (
    ENERGY_LABEL,
    NeuronConfig,
    StepEncoder,
    SynapticLinear,
    energy_report,
    make_neuron,
    readout,
)
from eegfm.spiking.layers import input_kind


class TinyNet(nn.Module):
    """tokens (B, 1, 1, 2) -> fc1 (real, 2->3) -> neuron -> fc2 (3->1) -> mean over steps."""

    def __init__(self, spiking: str, config: NeuronConfig):
        super().__init__()
        self.spiking, self.neuron_config = spiking, config
        self.fc1 = SynapticLinear(2, 3, bias=False)
        self.act = make_neuron(spiking, config)
        self.fc2 = SynapticLinear(3, 1, bias=False, input_kind=input_kind(spiking),
                                  max_level=config.max_level)
        self.steps = StepEncoder(spiking, config).steps
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
            self.fc2.weight.fill_(1.0)

    def forward(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        current = self.fc1(tokens.flatten(1).unsqueeze(0))  # one real step: (1, B, 3)
        current = current.expand(self.steps, *current.shape[1:])
        return readout(self.fc2(self.act(current)))


def tokens_of(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).view(len(rows), 1, 1, 2)


def test_lif_counters_match_hand_computation():
    # tau=1 makes each step memoryless: spike iff current >= 1. Currents: sample 1 [2, .5, 2.5]
    # -> spikes [1, 0, 1]; sample 2 [.5, .2, .7] -> none. T=2: 4 spikes / (6 neurons x 2 steps).
    config = NeuronConfig(timesteps=2, tau=1.0, threshold=1.0)
    tokens = tokens_of([[2.0, 0.5], [0.5, 0.2]])
    report = energy_report(TinyNet("lif", config), tokens, None,
                           ann_head=TinyNet("none", config))
    assert report["label"] == ENERGY_LABEL and "theoretical, compute-only" in report["label"]
    assert report["firing_rates"] == {"act": pytest.approx(1 / 3)}
    fc1, fc2 = report["layers"]["fc1"], report["layers"]["fc2"]
    assert fc1["macs"] == pytest.approx(6.0) and fc1["sops"] == 0.0   # 2 x 3 per sample
    assert fc2["firing_rate"] == pytest.approx(1 / 3)
    assert fc2["sops"] == pytest.approx(1 / 3 * 2 * 3)                # rate x T x FLOPs = 2
    assert fc2["macs"] == 0.0
    assert report["energy_pj"] == pytest.approx(4.6 * 6 + 0.9 * 2)   # 29.4 pJ per sample
    assert report["ann"]["macs"] == pytest.approx(9.0)
    assert report["ann"]["energy_pj"] == pytest.approx(4.6 * 9)
    assert report["energy_ratio"] == pytest.approx(29.4 / 41.4)
    assert report["timesteps"] == 2 and report["n_samples"] == 2


def test_integer_counters_match_hand_computation():
    # Currents [2, .4, 2.4] -> S [2, 0, 2]; [.7, 1.6, 2.3] -> S [1, 2, 2]: 9 spikes over
    # D=4 virtual steps of 6 neurons -> rate 9/24; fc2 SOPs = 9 spikes x fan-out 1 = 4.5/sample.
    config = NeuronConfig(max_level=4)
    tokens = tokens_of([[2.0, 0.4], [0.7, 1.6]])
    report = energy_report(TinyNet("int", config), tokens, None,
                           ann_head=TinyNet("none", config))
    assert report["firing_rates"] == {"act": pytest.approx(9 / 24)}
    assert report["layers"]["fc2"]["sops"] == pytest.approx(4.5)
    assert report["layers"]["fc2"]["firing_rate"] == pytest.approx(9 / 24)
    assert report["energy_pj"] == pytest.approx(4.6 * 6 + 0.9 * 4.5)
    assert report["virtual_timesteps"] == 4


def test_ann_counts_only_macs():
    config = NeuronConfig()
    report = energy_report(TinyNet("none", config), tokens_of([[1.0, 1.0]]), None)
    assert report["sops"] == 0.0 and report["macs"] == pytest.approx(9.0)
    assert report["energy_ratio"] == pytest.approx(1.0)
    assert report["firing_rates"] == {}


def test_meter_leaves_model_unmetered_and_in_its_mode():
    net = TinyNet("lif", NeuronConfig(timesteps=2, tau=1.0))
    net.train()
    energy_report(net, tokens_of([[2.0, 0.5]]), None, ann_head=TinyNet("none", NeuronConfig()))
    assert net.training
    assert all(getattr(m, "_meter", None) is None for m in net.modules())

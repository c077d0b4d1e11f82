"""Integer training, spike-driven inference: the binary expansion gives bit-identical outputs."""

from __future__ import annotations

import pytest
import torch

from eegfm.heads import create_head
from eegfm.spiking import IntegerNeuron, SynapticLinear, accumulation_is_exact, spike_driven


def trained_int_head(name: str, seed: int = 0):
    """An integer head after a few optimiser steps, so weights and BatchNorm statistics moved."""
    torch.manual_seed(seed)
    head = create_head(name, 16, 3, spiking="int", **({"n_experts": 3} if name == "shared_routed"
                                                     else {}))
    tokens = torch.randn(24, 4, 3, 16) * 2
    mask = torch.rand(24, 4) > 0.3
    mask[:, 0] = True
    target, subject = torch.randint(0, 3, (24,)), torch.arange(24) % 6
    if head.uses_subject:
        head.init_from_features(head.pool(tokens, mask), subject)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(3):
        out = head.training_loss(tokens, mask, target, subject=subject,
                                 pair_tokens=tokens * 1.1, pair_channel_mask=mask)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    return head.eval(), tokens, mask


@pytest.mark.parametrize("name", ["linear", "mlp", "shared_routed"])
def test_binary_expansion_reproduces_integer_outputs_exactly(name):
    head, tokens, mask = trained_int_head(name)
    trains = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: trains.append(out))
             for m in head.modules() if isinstance(m, IntegerNeuron)]
    with torch.no_grad():
        integer_logits = head(tokens, mask)
        levels = list(trains)
        trains.clear()
        with spike_driven(head):
            spiking_logits = head(tokens, mask)
    for hook in hooks:
        hook.remove()
    assert torch.equal(integer_logits, spiking_logits)
    # The spike-driven run really was binary over D virtual steps, and it spiked.
    assert len(trains) == len(levels) > 0
    for level, train in zip(levels, trains, strict=True):
        assert train.shape[0] == 4 and level.shape[0] == 1
        assert set(train.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(train.sum(0, keepdim=True), level)
    assert sum(float(t.sum()) for t in trains) > 0
    assert not any(m.spike_driven for m in head.modules() if hasattr(m, "spike_driven"))


def test_exactness_check_flags_a_too_wide_weight_range():
    layer = SynapticLinear(3, 1, input_kind="integer", max_level=4)
    assert accumulation_is_exact(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1e-30, 0.5]]))
    assert not accumulation_is_exact(layer)
    with pytest.warns(UserWarning, match="dynamic range"), spike_driven(layer):
        pass

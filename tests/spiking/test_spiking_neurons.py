"""LIF and integer neurons: dynamics by hand, surrogate gradients, documented limits."""

from __future__ import annotations

import math

import pytest
import torch

from eegfm.spiking import IntegerNeuron, LIFNeuron, NeuronConfig, spike, surrogate_grad


def constant_input(value: float, steps: int) -> torch.Tensor:
    """``(T, 1)`` constant input current."""
    return torch.full((steps, 1), value)


@pytest.mark.parametrize(("reset", "expected"), [("hard", [0, 1, 0, 1]), ("soft", [0, 1, 1, 0])])
def test_lif_dynamics_match_hand_computation(reset, expected):
    # tau=2, θ=1, x=1.8: v = 0.9, 1.35 (fire); hard -> 0.9, 1.35 (fire);
    # soft -> 0.35 -> 1.075 (fire) -> 0.075 -> 0.9375.
    neuron = LIFNeuron(NeuronConfig(timesteps=4, tau=2.0, threshold=1.0, reset=reset))
    spikes = neuron(constant_input(1.8, 4)).flatten().tolist()
    assert spikes == expected


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_surrogate_gradients_are_nonzero_and_finite(surrogate):
    torch.manual_seed(0)
    neuron = LIFNeuron(NeuronConfig(surrogate=surrogate, surrogate_slope=4.0))
    x = (torch.randn(4, 64) * 2).requires_grad_()
    neuron(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.9
    huge = torch.tensor([1e6, -1e6, 0.0], requires_grad=True)
    spike(huge, surrogate, 4.0).sum().backward()
    assert torch.isfinite(huge.grad).all()
    # peak value at the threshold: slope/4 (sigmoid), slope/2 (atan)
    peak = float(surrogate_grad(torch.tensor(0.0), surrogate, 4.0))
    assert peak == pytest.approx(1.0 if surrogate == "sigmoid" else 2.0)


def test_single_step_lif_fires_iff_input_reaches_tau_times_threshold():
    x = torch.tensor([[-3.0, 0.5, 1.9, 2.0, 2.1, 7.0]])
    neuron = LIFNeuron(NeuronConfig(timesteps=1, tau=2.0, threshold=1.0))
    assert neuron(x).flatten().tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_single_step_lif_threshold_to_zero_is_heaviside_with_scaled_surrogate(surrogate):
    """Documented limit: T=1, θ -> 0+ gives 1[x > 0], gradient surrogate(x/tau)/tau."""
    tau, slope = 2.0, 3.0
    x = torch.tensor([[-2.0, -1e-3, 1e-3, 0.4, 5.0]], requires_grad=True)
    for threshold in (1e-4, 1e-7):
        config = NeuronConfig(timesteps=1, tau=tau, threshold=threshold, surrogate=surrogate,
                              surrogate_slope=slope)
        out = LIFNeuron(config)(x)
        assert out.flatten().tolist() == [0, 0, 1, 1, 1]
        (grad,) = torch.autograd.grad(out.sum(), x)
        expected = surrogate_grad(x.detach() / tau - threshold, surrogate, slope) / tau
        torch.testing.assert_close(grad, expected)
    limit = surrogate_grad(torch.tensor(0.0), surrogate, slope) / tau
    assert float(expected[0, 2]) == pytest.approx(float(limit), rel=1e-3)


def test_detach_reset_changes_only_the_gradient():
    torch.manual_seed(1)
    x = (torch.rand(4, 32) * 3).requires_grad_()
    grads, outs = [], []
    for detach in (True, False):
        out = LIFNeuron(NeuronConfig(detach_reset=detach))(x)
        grads.append(torch.autograd.grad(out.sum(), x)[0])
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])
    assert all(torch.isfinite(g).all() for g in grads)


def test_integer_neuron_rounds_clips_and_passes_gradient_inside_range():
    neuron = IntegerNeuron(NeuronConfig(max_level=4))
    u = torch.tensor([[-1.0, 0.2, 1.4, 2.6, 3.9, 9.0]], requires_grad=True)
    s = neuron(u)
    assert s.flatten().tolist() == [0, 0, 1, 3, 4, 4]
    s.sum().backward()
    assert u.grad.flatten().tolist() == [0, 1, 1, 1, 1, 0]


def test_integer_neuron_expands_into_binary_virtual_steps():
    neuron = IntegerNeuron(NeuronConfig(max_level=4))
    neuron.spike_driven = True
    u = torch.tensor([[[0.1, 1.2, 2.7, 3.6, 8.0]]])
    trains = neuron(u)
    assert trains.shape == (4, 1, 5)
    assert set(trains.unique().tolist()) <= {0.0, 1.0}
    assert trains.sum(0).flatten().tolist() == [0, 1, 3, 4, 4]
    assert trains[:, 0, 2].tolist() == [1, 1, 1, 0]  # the first S virtual steps fire
    with pytest.raises(ValueError, match="one integer step"):
        neuron(torch.zeros(2, 1, 5))


@pytest.mark.parametrize("bad", [{"tau": 0.5}, {"threshold": 0.0}, {"reset": "zero"},
                                 {"surrogate": "relu"}, {"max_level": 0}, {"timesteps": 0}])
def test_neuron_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        NeuronConfig(**bad)


def test_lif_rate_grows_with_input():
    neuron = LIFNeuron(NeuronConfig(timesteps=16, tau=2.0, threshold=1.0, reset="soft"))
    rates = [float(neuron(constant_input(v, 16)).mean()) for v in (0.5, 1.5, 3.0, 6.0)]
    assert rates == sorted(rates) and rates[0] == 0.0 and not math.isclose(rates[-1], rates[1])

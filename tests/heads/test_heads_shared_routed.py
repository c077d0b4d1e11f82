"""Shared/routed head: routing, subject independence at test time, reweighting, reductions."""

from __future__ import annotations

import pytest
import torch

from eegfm.heads import SharedRoutedHead, create_head, masked_mean_pool
from eegfm.heads.losses import MutualReweighter
from eegfm.heads.routing import spherical_kmeans

D = 16


def grouped_batch(seed: int = 0, n_subjects: int = 8, per_subject: int = 10):
    """Tokens whose pooled features sit around one of 4 offsets per subject group."""
    gen = torch.Generator().manual_seed(seed)
    offsets = 4 * torch.nn.functional.normalize(torch.randn(4, D, generator=gen), dim=1)
    subject = torch.arange(n_subjects).repeat_interleave(per_subject)
    h = offsets[subject % 4] + 0.5 * torch.randn(len(subject), D, generator=gen)
    tokens = h[:, None, None, :] + 0.1 * torch.randn(len(subject), 2, 2, D, generator=gen)
    mask = torch.ones(len(subject), 2, dtype=torch.bool)
    target = torch.randint(0, 2, (len(subject),), generator=gen)
    return tokens, mask, target, subject


def trained_head(steps: int = 5, **options) -> tuple[SharedRoutedHead, tuple]:
    torch.manual_seed(0)
    data = grouped_batch()
    tokens, mask, target, subject = data
    head = create_head("shared_routed", D, 2, **options)
    head.init_from_features(masked_mean_pool(tokens, mask), subject)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for step in range(steps):
        head.set_progress(step / steps)
        out = head.training_loss(tokens, mask, target, subject=subject,
                                 pair_tokens=tokens * 1.05, pair_channel_mask=mask)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    return head, data


@pytest.mark.parametrize(("n_experts", "top_k"), [(4, 2), (6, 3), (3, 1), (1, 1)])
def test_routing_weights_are_k_sparse_and_sum_to_one(n_experts, top_k):
    head, (tokens, mask, _, _) = trained_head(n_experts=n_experts, top_k=top_k)
    routing = head.router(head.encode(head.features(tokens, mask)))
    assert ((routing.weights > 0).sum(1) == top_k).all()
    torch.testing.assert_close(routing.weights.sum(1), torch.ones(len(tokens)))
    assert (routing.weights >= 0).all()
    torch.testing.assert_close(routing.probs.sum(1), torch.ones(len(tokens)))


def test_eval_output_does_not_depend_on_subject_ids():
    head, (tokens, mask, target, subject) = trained_head()
    head.eval()
    reference = head(tokens, mask)
    # Same logits whatever ids accompany the batch, and after forgetting the subject table.
    for ids in (subject, torch.zeros_like(subject), subject.flip(0) + 100):
        torch.testing.assert_close(head.training_loss(tokens, mask, target, subject=ids,
                                                      pair_tokens=tokens).logits, reference)
    assert head.router.subject_ids.tolist() == list(range(8))  # eval never registers subjects
    head.router.subject_ids = torch.zeros(0, dtype=torch.long)
    head.router.subject_means = torch.zeros(0, D)
    head.router.subject_cluster = torch.zeros(0, dtype=torch.long)
    torch.testing.assert_close(head(tokens, mask), reference)


@pytest.mark.parametrize("sign", [1, -1])
def test_reweighting_stays_finite_with_mean_one_at_extreme_loss_ratios(sign):
    reweighter = MutualReweighter(sign=sign, clip=2.0, max_mix=1.0, warmup=0.0)
    gen = torch.Generator().manual_seed(0)
    for ratio in (1e6, 1e-6):
        loss_routed = torch.rand(64, generator=gen)
        loss_shared = ratio * torch.rand(64, generator=gen)
        loss_shared[0], loss_routed[1] = 0.0, 0.0
        for _ in range(3):
            w_shared, w_routed, _ = reweighter(loss_shared, loss_routed)
            for w in (w_shared, w_routed):
                assert torch.isfinite(w).all() and (w > 0).all()
                assert float(w.double().mean()) == pytest.approx(1.0, abs=1e-6)
                assert float(w.max() / w.min()) <= torch.e ** 4 * (1 + 1e-6)  # e^(2c) at most
    # the sign decides which branch leans on which samples
    w_shared, _, _ = reweighter(torch.tensor([5.0, 0.1]), torch.tensor([0.1, 5.0]))
    assert (w_shared[0] > w_shared[1]) == (sign == 1)


def test_reweighting_is_exactly_one_when_off_or_before_warmup():
    losses = torch.tensor([1e6, 1.0, 0.0, 3.0]), torch.tensor([1e-6, 2.0, 5.0, 0.0])
    for reweighter in (MutualReweighter(enabled=False), MutualReweighter(warmup=0.5)):
        w_shared, w_routed, _ = reweighter(*losses)  # progress 0: mix 0
        assert torch.equal(w_shared, torch.ones(4)) and torch.equal(w_routed, torch.ones(4))
    warm = MutualReweighter(max_mix=0.5, warmup=0.5)
    warm.progress = 0.25
    assert warm.mix == pytest.approx(0.25)
    head = create_head("shared_routed", D, 2, reweight=False)
    head.set_progress(1.0)
    assert head.reweighter.mix == 0.0


def test_one_expert_routed_branch_is_the_linear_probe():
    """E=1, no reweighting, branch='routed', expert_hidden=0 computes the 'linear' head exactly;
    its training loss is (1 + spec_weight) x the linear head's cross-entropy."""
    tokens, mask, target, subject = grouped_batch(3)
    torch.manual_seed(0)
    routed = create_head("shared_routed", D, 2, branch="routed", n_experts=1, top_k=1,
                         expert_hidden=0, reweight=False, spec_weight=0.5)
    linear = create_head("linear", D, 2)
    linear.norm.load_state_dict(routed.norm.state_dict())
    linear.classifier.load_state_dict(routed.experts[0].layers["fc1"].state_dict())
    routed.init_from_features(masked_mean_pool(tokens, mask), subject)
    torch.testing.assert_close(routed(tokens, mask), linear(tokens, mask))
    out_routed = routed.training_loss(tokens, mask, target, subject=subject)
    out_linear = linear.training_loss(tokens, mask, target)
    torch.testing.assert_close(out_routed.loss, 1.5 * out_linear.loss)
    out_routed.loss.backward()
    out_linear.loss.backward()
    torch.testing.assert_close(routed.experts[0].layers["fc1"].weight.grad,
                               1.5 * linear.classifier.weight.grad)
    assert out_routed.parts["route"] == 0.0 and out_routed.parts["margin"] == 0.0


def test_gradients_reach_both_branches_router_and_alpha():
    head, (tokens, mask, target, subject) = trained_head(steps=1)
    head.zero_grad()
    head.training_loss(tokens, mask, target, subject=subject, pair_tokens=tokens * 1.05,
                       pair_channel_mask=mask).loss.backward()
    named = dict(head.named_parameters())
    for name in ("shared_encoder.layers.fc1.weight", "shared_classifier.weight",
                 "router.proj.weight", "alpha_logit", "norm.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert sum(float(named[f"experts.{e}.layers.fc1.weight"].grad.abs().sum())
               for e in range(4) if named[f"experts.{e}.layers.fc1.weight"].grad is not None) > 0


def test_prototypes_find_subject_groups_and_diagnostics_describe_routing():
    head, (tokens, mask, _, subject) = trained_head(steps=20)
    clusters = dict(zip(head.router.subject_ids.tolist(),
                        head.router.subject_cluster.tolist(), strict=True))
    assert all(clusters[s] == clusters[s + 4] for s in range(4))  # same offset, same cluster
    assert len(set(clusters.values())) == 4
    h = masked_mean_pool(tokens, mask)
    diagnostics = head.routing_diagnostics(h, subject)
    assert set(diagnostics) == {"expert_entropy", "load_balance", "routing_consistency", "alpha"}
    assert diagnostics["routing_consistency"] > 0.9 and 0 < diagnostics["expert_entropy"] <= 1
    ids, matrix = head.routing_matrix(h, subject)
    assert ids.tolist() == list(range(8)) and matrix.shape == (8, 4)
    torch.testing.assert_close(matrix.sum(1), torch.ones(8))
    assert set(head.diagnostics()) >= {"alpha", "expert_entropy", "reweight_mix"}
    assert 0 < head.alpha < 1


def test_state_dict_round_trip_keeps_prototypes_and_subject_table():
    head, (tokens, mask, _, _) = trained_head()
    fresh = create_head("shared_routed", D, 2)
    fresh.load_state_dict(head.state_dict())
    head.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(tokens, mask), head(tokens, mask))
    assert torch.equal(fresh.router.subject_ids, head.router.subject_ids)


def test_branch_switches_and_missing_inputs():
    tokens, mask, target, _ = grouped_batch()
    shared = create_head("shared_routed", D, 2, branch="shared")
    assert shared.needs_pair_view and not shared.uses_subject and shared.alpha == 1.0
    routed = create_head("shared_routed", D, 2, branch="routed")
    assert not routed.needs_pair_view and routed.uses_subject and routed.alpha == 0.0
    assert not hasattr(routed, "shared_encoder") and not hasattr(shared, "experts")
    fused = create_head("shared_routed", D, 2, je_weight=0.0)
    assert not fused.needs_pair_view
    with pytest.raises(ValueError, match="subject ids"):
        fused.training_loss(tokens, mask, target)
    with pytest.raises(ValueError, match="pair_tokens"):
        shared.training_loss(tokens, mask, target)
    with pytest.raises(ValueError, match="branch"):
        create_head("shared_routed", D, 2, branch="both")
    with pytest.raises(ValueError, match="top_k"):
        create_head("shared_routed", D, 2, n_experts=2, top_k=3)
    infonce = create_head("shared_routed", D, 2, branch="shared", je_loss="infonce")
    out = infonce.training_loss(tokens, mask, target, pair_tokens=tokens, pair_channel_mask=mask)
    assert "je_accuracy" in out.parts


def test_spherical_kmeans_recovers_separated_directions():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(3)
    points = centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 3, generator=gen)
    found, labels = spherical_kmeans(points, 3, seed=1)
    assert len(set(labels.tolist())) == 3
    assert all(len(set(labels[i * 10:(i + 1) * 10].tolist())) == 1 for i in range(3))
    torch.testing.assert_close(found.abs().max(1).values, torch.ones(3), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="at least k=4"):
        spherical_kmeans(points[:3], 4)

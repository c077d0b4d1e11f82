"""Spatial attention: the sparse kNN path equals the dense one when k covers every channel."""

from __future__ import annotations

import pytest
import torch

from eegfm.models import create_model
from eegfm.models.attention import SpatialAttention
from eegfm.models.neighbours import build_spatial_context


def test_knn_path_equals_dense_path_when_k_covers_all(make_batch):
    torch.manual_seed(0)
    dense = create_model("eegfm_tiny", dense_max_channels=1000).eval()
    sparse = create_model("eegfm_tiny", dense_max_channels=0, knn_k=40).eval()
    sparse.load_state_dict(dense.state_dict())
    x, coords = make_batch(2, 40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 33:] = False
    with torch.no_grad():
        assert sparse.prepare(x, coords, mask).spatial.neighbours is not None
        assert dense.prepare(x, coords, mask).spatial.neighbours is None
        out_sparse = sparse.forward_features(x, coords, mask)
        out_dense = dense.forward_features(x, coords, mask)
    torch.testing.assert_close(out_sparse, out_dense, atol=1e-5, rtol=1e-5)


def test_knn_gradients_equal_dense_gradients(make_batch):
    torch.manual_seed(0)
    dense = create_model("eegfm_tiny", dense_max_channels=1000)
    sparse = create_model("eegfm_tiny", dense_max_channels=0, knn_k=24)
    sparse.load_state_dict(dense.state_dict())
    x, coords = make_batch(1, 24)
    for model in (dense, sparse):
        model.forward_features(x, coords).pow(2).mean().backward()
    for (name, p_dense), p_sparse in zip(dense.named_parameters(), sparse.parameters(),
                                         strict=True):
        if p_dense.grad is not None:
            torch.testing.assert_close(p_sparse.grad, p_dense.grad, atol=1e-5, rtol=1e-4,
                                       msg=name)


def test_knn_restricts_each_channel_to_its_nearest_valid_electrodes(make_batch):
    _, coords = make_batch(1, 80)
    valid = torch.ones(1, 80, dtype=torch.bool)
    valid[0, :5] = False
    ctx = build_spatial_context(coords, valid, head_radius_m=0.09, n_rbf=8, knn_k=8,
                                dense_max_channels=64, block_size=16)
    distance = torch.cdist(coords, coords)[0]
    distance[:, :5] = float("inf")
    expected = distance.topk(8, dim=-1, largest=False).indices
    assert torch.equal(ctx.neighbours[0, :, :8].sort(dim=-1).values,
                       expected.sort(dim=-1).values)
    # every query's allowed keys in its block are exactly its 8 nearest valid channels
    for g in range(ctx.members.shape[1]):
        for i, channel in enumerate(ctx.members[0, g].tolist()):
            allowed = set(ctx.keys[0, g][ctx.key_valid[0, g, i]].tolist())
            assert allowed == set(expected[channel].tolist())
    assert ctx.keys.shape[-1] < 16 * 8  # blocks share neighbours


@pytest.mark.parametrize(("knn_k", "block_size"), [(6, 4), (12, 32), (1, 8)])
def test_blocked_knn_attention_equals_masked_dense_attention(make_batch, knn_k, block_size):
    torch.manual_seed(0)
    layer = SpatialAttention(32, 4, n_rbf=8).eval()
    torch.nn.init.normal_(layer.distance_bias.weight)  # a non-trivial distance bias
    _, coords = make_batch(2, 50)
    tokens = torch.randn(2, 50, 3, 32)
    valid = torch.ones(2, 50, dtype=torch.bool)
    valid[1, 40:] = False
    sparse = build_spatial_context(coords, valid, head_radius_m=0.09, n_rbf=8, knn_k=knn_k,
                                   dense_max_channels=10, block_size=block_size)
    dense = build_spatial_context(coords, valid, head_radius_m=0.09, n_rbf=8, knn_k=knn_k,
                                  dense_max_channels=100)
    # reference: dense attention whose mask allows each query its kNN set only
    allowed = torch.zeros(2, 50, 50, dtype=torch.bool)
    allowed.scatter_(2, sparse.neighbours[:, :, :knn_k], True)
    dense.key_valid = allowed & valid[:, None, :]
    with torch.no_grad():
        torch.testing.assert_close(layer(tokens, sparse), layer(tokens, dense), atol=1e-5,
                                   rtol=1e-5)


def test_far_channels_do_not_affect_a_query_in_one_sparse_layer(make_batch):
    torch.manual_seed(0)
    model = create_model("eegfm_tiny", depth=1, dense_max_channels=0, knn_k=4).eval()
    x, coords = make_batch(1, 30)
    inputs = model.prepare(x, coords)
    far = set(range(30)) - set(inputs.spatial.neighbours[0, 0].tolist())
    changed = x.clone()
    changed[0, sorted(far)] += 100.0 * torch.randn(len(far), 800)
    with torch.no_grad():
        before = model.forward_features(x, coords)[0, 0]
        after = model.forward_features(changed, coords)[0, 0]
    torch.testing.assert_close(before, after)


def test_distance_bias_starts_as_a_decreasing_function_of_distance():
    from eegfm.models.neighbours import rbf_expand

    layer = create_model("eegfm_tiny").blocks[0].spatial
    distance = torch.linspace(0, 2, 21)
    with torch.no_grad():
        bias = layer.distance_bias(rbf_expand(distance, 16, 2.0))  # (21, H)
    assert torch.all(bias[1:] < bias[:-1])
    slopes = (bias[0] - bias[-1]) / 2
    assert slopes.max() / slopes.min() > 10  # local and global heads


def test_recomputed_knn_blocks_give_the_same_gradients(make_batch):
    torch.manual_seed(0)
    kept = create_model("eegfm_tiny", dense_max_channels=16, knn_k=8)
    recomputed = create_model("eegfm_tiny", dense_max_channels=16, knn_k=8,
                              knn_recompute_above=0)
    recomputed.load_state_dict(kept.state_dict())
    x, coords = make_batch(2, 40)
    for model in (kept, recomputed):
        model.forward_features(x, coords).pow(2).mean().backward()
    for p_kept, p_recomputed in zip(kept.parameters(), recomputed.parameters(), strict=True):
        if p_kept.grad is not None:
            torch.testing.assert_close(p_recomputed.grad, p_kept.grad)

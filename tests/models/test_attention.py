"""Spatial attention: the sparse kNN path equals the dense one when k covers every channel."""

from __future__ import annotations

import torch

from eegfm.models import create_model
from eegfm.models.attention import build_spatial_context


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
                                dense_max_channels=64)
    assert ctx.neighbours.shape == (1, 80, 8)
    distance = torch.cdist(coords, coords)[0]
    distance[:, :5] = float("inf")
    expected = distance.topk(8, dim=-1, largest=False).indices
    assert torch.equal(ctx.neighbours[0].sort(dim=-1).values, expected.sort(dim=-1).values)
    assert ctx.key_valid.all()
    assert ctx.rbf.shape == (1, 80, 8, 8)


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

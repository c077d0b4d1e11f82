"""Prototype router of the shared/routed head: cosine top-k routing and online subject k-means.

Routing space: ``u = normalise(W_r x)`` with ``x`` the step-form encoded features (real for
the ANN, spikes or integers otherwise; averaged over steps), ``W_r`` learned and identity at
start. Prototypes ``P``
(E, d_r) are unit vectors kept as buffers: initialised by spherical k-means over per-subject
mean embeddings, then moved by an online k-means on those means (EMA), never by gradients.
Subject ids serve training only (router targets, statistics); routing itself never sees them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.spiking import Metered, SynapticLinear, readout
from eegfm.spiking.layers import input_kind


class Routing(NamedTuple):
    """Router output for a batch ``(B, ...)``."""

    weights: torch.Tensor   # (B, E) top-k, renormalised to sum to 1
    probs: torch.Tensor     # (B, E) softmax of cosine / temperature, before top-k
    cosine: torch.Tensor    # (B, E) cosine similarity to each prototype
    embedding: torch.Tensor  # (B, d_r) unit routing embedding u


def spherical_kmeans(points: torch.Tensor, k: int, *, iterations: int = 50,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on unit vectors with cosine similarity (k-means++ seeding); (centres, labels)."""
    points = F.normalize(points.double(), dim=1)
    n = len(points)
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    gen = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(n, (1,), generator=gen)]
    while len(centres) < k:  # k-means++: next centre far (in cosine distance) from the chosen
        distance = (1.0 - points @ centres.T).min(1).values.clamp_min(0)
        weights = distance if float(distance.sum()) > 0 else torch.ones(n, dtype=points.dtype)
        centres = torch.cat([centres, points[torch.multinomial(weights, 1, generator=gen)]])
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        labels = (points @ centres.T).argmax(1)
        updated = centres.clone()
        for c in range(k):
            members = points[labels == c]
            if len(members):
                updated[c] = F.normalize(members.mean(0), dim=0)
            else:  # empty cluster: restart it at the worst-served point
                updated[c] = points[(points @ centres.T).max(1).values.argmin()]
        if torch.allclose(updated, centres):
            break
        centres = updated
    return centres.float(), (points @ centres.double().T).argmax(1)


class PrototypeRouter(nn.Module, Metered):
    """Cosine routing to E prototypes with top-k sparsity, plus the subject statistics."""

    def __init__(self, dim: int, n_experts: int, *, top_k: int = 2, temperature: float = 0.1,
                 router_dim: int | None = None, prototype_momentum: float = 0.05,
                 subject_momentum: float = 0.1, seed: int = 0, spiking: str = "none",
                 max_level: int = 4):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in [1, n_experts={n_experts}], got {top_k}")
        if temperature <= 0:
            raise ValueError(f"route_temperature must be > 0, got {temperature}")
        self.n_experts, self.top_k, self.temperature = n_experts, top_k, temperature
        self.prototype_momentum, self.subject_momentum, self.seed = (
            prototype_momentum, subject_momentum, seed)
        router_dim = router_dim or dim
        self.proj = SynapticLinear(dim, router_dim, input_kind=input_kind(spiking),
                                   max_level=max_level)
        with torch.no_grad():
            if router_dim == dim:
                self.proj.weight.copy_(torch.eye(dim))
            else:
                nn.init.orthogonal_(self.proj.weight)
            self.proj.bias.zero_()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("prototypes",
                             F.normalize(torch.randn(n_experts, router_dim, generator=gen), dim=1))
        self.register_buffer("subject_ids", torch.zeros(0, dtype=torch.long))
        self.register_buffer("subject_means", torch.zeros(0, router_dim))
        self.register_buffer("subject_cluster", torch.zeros(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The subject table grows with the training subjects: take the stored size.
        for name in ("subject_ids", "subject_means", "subject_cluster"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit routing embedding ``u (B, d_r)`` of step-form encoded features ``(S, B, D)``.

        Float32 even under autocast: top-k decisions should not hinge on bfloat16 rounding.
        """
        return F.normalize(readout(self.proj(x)).float(), dim=-1)

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x (S, B, D)``: cosine / temperature, softmax, top-k, renormalised."""
        u = self.embed(x)
        with torch.autocast(device_type=u.device.type, enabled=False):
            cosine = u @ self.prototypes.float().T
            probs = torch.softmax(cosine / self.temperature, dim=-1)
            top = probs.topk(self.top_k, dim=-1)
            kept = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
            weights = kept / kept.sum(-1, keepdim=True)
        # an int, not float(): converting a symbolic size would fix an exported graph's batch
        self._record_synapse("cosine", flops_per_step=u.numel() * self.n_experts, steps=1)
        return Routing(weights, probs, cosine, u)

    @torch.no_grad()
    def init_prototypes(self, x: torch.Tensor, subject: torch.Tensor) -> None:
        """Spherical k-means over per-subject mean embeddings (over samples if too few subjects).

        ``x (S, N, D)``: step-form encoded features of the training samples.
        """
        u = self.embed(x).detach().cpu()
        ids, means = _group_means(u, subject.detach().cpu().long())
        points = means if len(ids) >= self.n_experts else u
        centres, _ = spherical_kmeans(points, self.n_experts, seed=self.seed)
        device = self.prototypes.device
        self.prototypes = centres.to(device)
        self.subject_ids = ids.to(device)
        self.subject_means = means.to(device)
        self.subject_cluster = (self.subject_means @ self.prototypes.T).argmax(1)

    @torch.no_grad()
    def clusters_of(self, subject: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Cluster of each sample's subject ``(B,)``.

        In training, unseen subjects join the table (cluster: the prototype nearest their batch
        mean); outside training they get that cluster without being stored.
        """
        if self.training:
            self._register(subject, u)
        ids, means = _group_means(u.detach(), subject.long())
        cluster = (means @ self.prototypes.T).argmax(1)  # nearest prototype, for unseen ids
        if len(self.subject_ids):
            known = torch.isin(ids, self.subject_ids)
            index = torch.searchsorted(self.subject_ids, ids).clamp_max(len(self.subject_ids) - 1)
            cluster = torch.where(known, self.subject_cluster[index], cluster)
        return cluster[torch.searchsorted(ids, subject.long())]

    @torch.no_grad()
    def update(self, subject: torch.Tensor, u: torch.Tensor) -> None:
        """One online k-means step: EMA subject means, reassign subjects, EMA prototypes."""
        self._register(subject, u)
        ids, means = _group_means(u.detach(), subject.long())
        index = torch.searchsorted(self.subject_ids, ids)
        mu = self.subject_momentum
        self.subject_means[index] = F.normalize(
            (1 - mu) * self.subject_means[index] + mu * means, dim=1)
        self.subject_cluster = (self.subject_means @ self.prototypes.T).argmax(1)
        sums = torch.zeros_like(self.prototypes).index_add_(0, self.subject_cluster,
                                                            self.subject_means)
        occupied = torch.bincount(self.subject_cluster, minlength=self.n_experts) > 0
        mu = self.prototype_momentum
        moved = F.normalize((1 - mu) * self.prototypes + mu * F.normalize(sums, dim=1), dim=1)
        # A new tensor, not an in-place copy: this step's routing graph still holds the old one.
        self.prototypes = torch.where(occupied[:, None], moved, self.prototypes)

    def _register(self, subject: torch.Tensor, u: torch.Tensor) -> None:
        ids, means = _group_means(u.detach(), subject.long())
        new = ~torch.isin(ids, self.subject_ids)
        if not bool(new.any()):
            return
        all_ids = torch.cat([self.subject_ids, ids[new]])
        all_means = torch.cat([self.subject_means, means[new].to(self.subject_means.dtype)])
        order = all_ids.argsort()
        self.subject_ids, self.subject_means = all_ids[order], all_means[order]
        self.subject_cluster = (self.subject_means @ self.prototypes.T).argmax(1)


def _group_means(u: torch.Tensor, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique subject ids and the unit mean embedding of each."""
    ids, inverse = torch.unique(subject, sorted=True, return_inverse=True)
    sums = torch.zeros(len(ids), u.shape[1], dtype=u.dtype, device=u.device)
    sums.index_add_(0, inverse, u)
    return ids, F.normalize(sums, dim=1)

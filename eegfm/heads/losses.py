"""Losses of the shared/routed head: joint embedding, load balance, prototype margin, and the
mutual-guided sample reweighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, *, invariance: float = 25.0,
                variance: float = 25.0, covariance: float = 1.0,
                eps: float = 1e-4) -> tuple[torch.Tensor, dict[str, float]]:
    """VICReg (Bardes et al., 2022) between two views' embeddings ``(B, d)``.

    Invariance: mean squared difference; variance: hinge keeping each dimension's standard
    deviation at 1; covariance: squared off-diagonal covariances over ``d``. Batches of one
    sample have only the invariance term.
    """
    inv = F.mse_loss(z1, z2)
    var = cov = z1.new_zeros(())
    if z1.shape[0] > 1:
        for z in (z1, z2):
            z = z - z.mean(0)
            std = torch.sqrt(z.var(0) + eps)
            var = var + F.relu(1.0 - std).mean() / 2
            c = (z.T @ z) / (z.shape[0] - 1)
            off_diagonal = c - torch.diag(torch.diagonal(c))
            cov = cov + off_diagonal.pow(2).sum() / z.shape[1]
    loss = invariance * inv + variance * var + covariance * cov
    return loss, {"je_invariance": float(inv.detach()), "je_variance": float(var.detach()),
                  "je_covariance": float(cov.detach())}


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, *,
                  temperature: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Symmetric InfoNCE (NT-Xent): each view must pick its partner among the other view's batch."""
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = z1 @ z2.T / temperature
    target = torch.arange(len(z1), device=z1.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    accuracy = (logits.argmax(1) == target).float().mean()
    return loss, {"je_accuracy": float(accuracy)}


def load_balance_loss(probs: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer balance ``E · Σ_e f_e · p̄_e − 1``: 0 when routing is uniform.

    ``probs (B, E)``: router probabilities before top-k; ``routing (B, E)``: the sparse,
    renormalised weights; ``f_e`` is the share of top-k assignments that went to expert e.
    """
    assigned = (routing > 0).to(probs.dtype)
    share = assigned.sum(0) / assigned.sum().clamp_min(1.0)
    return probs.shape[1] * (share * probs.mean(0)).sum() - 1.0


def prototype_margin_loss(cosine: torch.Tensor, cluster: torch.Tensor,
                          margin: float) -> torch.Tensor:
    """Hinge ``max(0, m − (cos(u, P_a) − max_{e≠a} cos(u, P_e)))`` towards the subject's cluster a.

    ``cosine (B, E)``, ``cluster (B,)``. Zero when there is a single prototype.
    """
    if cosine.shape[1] < 2:
        return cosine.new_zeros(())
    own = cosine.gather(1, cluster[:, None]).squeeze(1)
    others = cosine.scatter(1, cluster[:, None], float("-inf")).max(1).values
    return F.relu(margin - (own - others)).mean()


class MutualReweighter(nn.Module):
    """Per-sample weights for the two branches from their normalised loss gap.

    ``ℓ̂ = ℓ / running_mean(ℓ)`` (detached) per branch, ``g = clip(ℓ̂_s − ℓ̂_r, −c, c)``;
    shared weights ``1 + β (B · softmax(+σ g) − 1)``, routed ones the same with ``−σ g``, where
    σ = ``sign`` (+1: each branch leans on the samples it finds harder than the other branch
    does; −1: on those it already handles better) and β is ``max_mix`` warmed up linearly from 0
    over the first ``warmup`` fraction of training. Weights are finite, positive, average 1 over
    the batch (computed in float64), and are exactly 1 when ``enabled`` is False.
    """

    def __init__(self, enabled: bool = True, sign: int = 1, clip: float = 2.0,
                 max_mix: float = 0.5, warmup: float = 0.3, momentum: float = 0.99,
                 eps: float = 1e-8):
        super().__init__()
        if sign not in (1, -1):
            raise ValueError(f"reweight_sign must be +1 or -1, got {sign}")
        if clip <= 0 or not 0.0 <= max_mix <= 1.0 or not 0.0 <= warmup <= 1.0:
            raise ValueError("need reweight_clip > 0, reweight_mix and reweight_warmup in [0, 1]; "
                             f"got {clip}, {max_mix}, {warmup}")
        self.enabled, self.sign, self.clip = enabled, sign, clip
        self.max_mix, self.warmup, self.momentum, self.eps = max_mix, warmup, momentum, eps
        self.register_buffer("running_mean", torch.full((2,), float("nan"), dtype=torch.float64))
        self.progress = 0.0

    @property
    def mix(self) -> float:
        """β: how far the weights have moved from 1 at the current training progress."""
        if not self.enabled:
            return 0.0
        ramp = 1.0 if self.warmup == 0 else min(1.0, self.progress / self.warmup)
        return self.max_mix * ramp

    def forward(self, loss_shared: torch.Tensor,
                loss_routed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Weights ``(w_shared, w_routed)``, each ``(B,)``, from per-sample losses ``(B,)``."""
        ones = torch.ones_like(loss_shared)
        if not self.enabled:
            return ones, ones.clone(), {"reweight_mix": 0.0}
        losses = torch.stack([loss_shared, loss_routed]).detach().double()
        losses = torch.nan_to_num(losses, nan=0.0, posinf=torch.finfo(torch.float64).max)
        if self.training:
            batch_mean = losses.mean(1)
            fresh = torch.isnan(self.running_mean)
            blended = self.momentum * self.running_mean + (1 - self.momentum) * batch_mean
            self.running_mean.copy_(torch.where(fresh, batch_mean, blended))
        scale = torch.nan_to_num(self.running_mean, nan=1.0).clamp_min(self.eps)
        normalised = losses / scale[:, None]
        gap = (normalised[0] - normalised[1]).clamp(-self.clip, self.clip)
        gap = torch.nan_to_num(gap, nan=0.0)
        batch, beta = len(gap), self.mix
        w_shared = 1.0 + beta * (batch * torch.softmax(self.sign * gap, 0) - 1.0)
        w_routed = 1.0 + beta * (batch * torch.softmax(-self.sign * gap, 0) - 1.0)
        stats = {"reweight_mix": beta, "reweight_gap": float(gap.mean()),
                 "reweight_max": float(torch.maximum(w_shared, w_routed).max())}
        return w_shared.to(loss_shared.dtype), w_routed.to(loss_routed.dtype), stats

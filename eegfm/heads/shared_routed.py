"""Shared/routed expert head for cross-subject decoding (after SREA; recipe choices are ours).

``h = LayerNorm(masked mean of tokens)``. Shared branch: ``z_s = f_s(h)``, logits ``c_s(z_s)``,
plus a joint-embedding loss (VICReg or InfoNCE) between two augmented views. Routed branch: E
expert MLPs ``g_e`` weighted by top-k cosine routing to subject-cluster prototypes. Fused logits
``α·c_s(z_s) + (1−α)·Σ_e r_e g_e(h)`` with ``α = sigmoid(a)`` learned. See docs/heads.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.heads.base import Head, HeadLoss, check_tokens, masked_mean_pool
from eegfm.heads.losses import (
    MutualReweighter,
    info_nce_loss,
    load_balance_loss,
    prototype_margin_loss,
    vicreg_loss,
)
from eegfm.heads.routing import PrototypeRouter, Routing
from eegfm.spiking import NeuronConfig, StepEncoder, StepMLP, SynapticLinear, readout
from eegfm.spiking.layers import input_kind

BRANCHES = ("fused", "shared", "routed")


class SharedRoutedHead(Head):
    """Shared (subject-invariant) + routed (subject-specific) experts; ``branch`` isolates one."""

    def __init__(self, embed_dim: int, n_classes: int, spiking: str = "none",
                 neuron: NeuronConfig | None = None, *, branch: str = "fused",
                 n_experts: int = 4, top_k: int = 2, shared_hidden: int | None = None,
                 shared_dim: int | None = None, expert_hidden: int | None = None,
                 dropout: float = 0.1, route_temperature: float = 0.1,
                 router_dim: int | None = None, prototype_momentum: float = 0.05,
                 subject_momentum: float = 0.1, je_loss: str = "vicreg", je_weight: float = 0.04,
                 je_temperature: float = 0.1, shared_weight: float = 1.0, spec_weight: float = 1.0,
                 balance_weight: float = 0.01, margin: float = 0.2, margin_weight: float = 0.1,
                 route_weight: float = 0.1, reweight: bool = True, reweight_sign: int = 1,
                 reweight_clip: float = 2.0, reweight_mix: float = 0.5,
                 reweight_warmup: float = 0.3, alpha_init: float = 0.5, seed: int = 0):
        super().__init__(embed_dim, n_classes, spiking, neuron)
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        if je_loss not in ("vicreg", "infonce"):
            raise ValueError(f"je_loss must be 'vicreg' or 'infonce', got {je_loss!r}")
        if not 0.0 < alpha_init < 1.0:
            raise ValueError(f"alpha_init must be in (0, 1), got {alpha_init}")
        self.branch = branch
        self.has_shared, self.has_routed = branch != "routed", branch != "shared"
        self.needs_pair_view = self.has_shared and je_weight > 0
        self.uses_subject = self.has_routed
        self.je_loss, self.je_weight, self.je_temperature = je_loss, je_weight, je_temperature
        self.shared_weight, self.spec_weight = shared_weight, spec_weight
        self.balance_weight, self.margin, self.margin_weight = balance_weight, margin, margin_weight
        self.route_weight = route_weight
        cfg, kind = self.neuron_config, input_kind(spiking)
        self.norm = nn.LayerNorm(embed_dim)
        self.encode = StepEncoder(spiking, cfg)
        if self.has_shared:
            shared_dim = shared_dim or embed_dim
            self.shared_encoder = StepMLP(embed_dim, [shared_hidden or embed_dim], shared_dim,
                                          spiking=spiking, config=cfg, dropout=dropout,
                                          output_neuron=spiking != "none")
            self.shared_classifier = SynapticLinear(shared_dim, n_classes, input_kind=kind,
                                                    max_level=cfg.max_level)
        if self.has_routed:
            self.router = PrototypeRouter(embed_dim, n_experts, top_k=top_k,
                                          temperature=route_temperature, router_dim=router_dim,
                                          prototype_momentum=prototype_momentum,
                                          subject_momentum=subject_momentum, seed=seed,
                                          spiking=spiking, max_level=cfg.max_level)
            hidden = [] if expert_hidden == 0 else [expert_hidden or embed_dim]
            self.experts = nn.ModuleList(
                StepMLP(embed_dim, hidden, n_classes, spiking=spiking, config=cfg,
                        dropout=dropout) for _ in range(n_experts))
            self.register_buffer("usage", torch.full((n_experts,), 1.0 / n_experts))
        if branch == "fused":
            self.alpha_logit = nn.Parameter(torch.tensor(math.log(alpha_init / (1 - alpha_init))))
        self.reweighter = MutualReweighter(reweight and branch == "fused", reweight_sign,
                                           reweight_clip, reweight_mix, reweight_warmup)
        self._last: dict[str, float] = {}

    @property
    def alpha(self) -> float:
        """Fusion weight of the shared branch (1 for shared-only, 0 for routed-only)."""
        if self.branch != "fused":
            return 1.0 if self.branch == "shared" else 0.0
        return float(torch.sigmoid(self.alpha_logit.detach()))

    def features(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """Normalised pooled features ``(B, D)``."""
        channel_mask = check_tokens(tokens, channel_mask, self.embed_dim)
        return self.norm(masked_mean_pool(tokens, channel_mask))

    def shared_forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared logits ``(B, K)`` and embedding ``z_s (B, d)`` (firing rates when spiking)."""
        z = self.shared_encoder(self.encode(h))
        return readout(self.shared_classifier(z)), readout(z)

    def routed_forward(self, h: torch.Tensor) -> tuple[torch.Tensor, Routing, list]:
        """Routed logits ``Σ_e r_e g_e(h)``, the routing, and ``(index, logits)`` per expert.

        Only the samples routed to an expert (``r_e > 0``) go through it.
        """
        spikes = self.encode(h)
        routing = self.router(spikes)
        logits = h.new_zeros(h.shape[0], self.n_classes)  # not len(h): it fixes an export's batch
        per_expert = []
        exporting = torch.compiler.is_exporting()
        for e, expert in enumerate(self.experts):
            if exporting:
                # an exported graph has fixed shapes: every sample goes through every expert,
                # and the unrouted ones are added with their weight, 0
                index = torch.arange(h.shape[0], device=h.device)
            else:
                index = torch.nonzero(routing.weights[:, e] > 0).flatten()
                if index.numel() == 0:
                    continue
            out = readout(expert(spikes[:, index]))
            weighted = routing.weights[index, e, None] * out
            logits = logits.index_add(0, index, weighted.to(logits.dtype))  # autocast-safe
            per_expert.append((e, index, out))
        return logits, routing, per_expert

    def _fuse(self, shared: torch.Tensor | None, routed: torch.Tensor | None) -> torch.Tensor:
        if shared is None or routed is None:
            return shared if routed is None else routed
        alpha = torch.sigmoid(self.alpha_logit)
        return alpha * shared + (1 - alpha) * routed

    def forward(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, P, D), (B, C) -> logits (B, K)``; routing by prototypes only."""
        h = self.features(tokens, channel_mask)
        shared = self.shared_forward(h)[0] if self.has_shared else None
        routed = self.routed_forward(h)[0] if self.has_routed else None
        return self._fuse(shared, routed)

    def training_loss(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None,
                      target: torch.Tensor, *, subject: torch.Tensor | None = None,
                      pair_tokens: torch.Tensor | None = None,
                      pair_channel_mask: torch.Tensor | None = None) -> HeadLoss:
        """Fused task loss + branch losses + specialisation + joint embedding (docs/heads.md)."""
        if self.has_routed and subject is None:
            raise ValueError("the shared_routed head needs subject ids in training_loss "
                             "(uses_subject=True); pass subject=")
        if self.needs_pair_view and pair_tokens is None:
            raise ValueError("the shared_routed head needs a second augmented view "
                             "(needs_pair_view=True); pass pair_tokens= and pair_channel_mask=")
        h = self.features(tokens, channel_mask)
        shared, z = self.shared_forward(h) if self.has_shared else (None, None)
        routed, routing, per_expert = (self.routed_forward(h) if self.has_routed
                                       else (None, None, None))
        logits = self._fuse(shared, routed)
        loss = F.cross_entropy(logits, target)
        parts = {"ce": float(loss.detach())}
        if self.has_shared and self.has_routed:
            loss_shared = F.cross_entropy(shared, target, reduction="none")
            loss_routed = F.cross_entropy(routed, target, reduction="none")
            w_shared, w_routed, stats = self.reweighter(loss_shared, loss_routed)
            parts.update(stats, ce_shared=float(loss_shared.detach().mean()),
                         ce_routed=float(loss_routed.detach().mean()))
            shared_term = (w_shared * loss_shared).mean()
            loss = loss + self.shared_weight * shared_term
        else:
            w_routed = torch.ones_like(target, dtype=logits.dtype)
        if self.has_routed:
            loss = loss + self._routed_losses(routing, per_expert, target, subject, w_routed,
                                              parts)
        if self.needs_pair_view:
            pair_h = self.features(pair_tokens, pair_channel_mask)
            je, je_parts = self._joint_embedding(z, self.shared_forward(pair_h)[1])
            loss = loss + self.je_weight * je
            parts.update(je_parts, je=float(je.detach()))
        parts["alpha"] = self.alpha
        self._last = parts
        return HeadLoss(loss, logits, parts)

    def _routed_losses(self, routing: Routing, per_expert: list, target: torch.Tensor,
                       subject: torch.Tensor, weights: torch.Tensor,
                       parts: dict[str, float]) -> torch.Tensor:
        """Specialisation (routing-weighted expert CE), balance, margin, router supervision."""
        spec = routing.weights.new_zeros(len(target))
        for e, index, out in per_expert:
            expert_ce = F.cross_entropy(out.float(), target[index], reduction="none")
            spec = spec.index_add(0, index, routing.weights[index, e] * expert_ce)
        spec = (weights * spec).mean()
        balance = load_balance_loss(routing.probs, routing.weights)
        cluster = self.router.clusters_of(subject, routing.embedding)
        margin = prototype_margin_loss(routing.cosine, cluster, self.margin)
        route = F.cross_entropy(routing.cosine / self.router.temperature, cluster)
        if self.training:
            self.router.update(subject, routing.embedding)
            with torch.no_grad():
                self.usage.mul_(0.9).add_(0.1 * routing.weights.detach().mean(0))
        parts.update(spec=float(spec.detach()), balance=float(balance.detach()),
                     margin=float(margin.detach()), route=float(route.detach()))
        return (self.spec_weight * spec + self.balance_weight * balance
                + self.margin_weight * margin + self.route_weight * route)

    def _joint_embedding(self, z1: torch.Tensor,
                         z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.je_loss == "vicreg":
            return vicreg_loss(z1, z2)
        return info_nce_loss(z1, z2, temperature=self.je_temperature)

    def set_progress(self, fraction: float) -> None:
        """Training progress 0..1: drives the reweighting warm-up."""
        super().set_progress(fraction)
        self.reweighter.progress = self.progress

    @torch.no_grad()
    def init_from_features(self, h: torch.Tensor, subject: torch.Tensor) -> None:
        """Prototypes by k-means over per-subject means of ``h = masked_mean_pool(tokens)``."""
        if self.has_routed:
            was_training = self.training
            self.eval()  # deterministic encoding (no dropout, BatchNorm running statistics)
            self.router.init_prototypes(self.encode(self.norm(h)), subject)
            self.train(was_training)

    def diagnostics(self) -> dict[str, float]:
        """α, reweighting mix, expert-usage entropy (EMA over training batches), last losses."""
        out = {"alpha": self.alpha, "reweight_mix": self.reweighter.mix}
        if self.has_routed:
            out["expert_entropy"] = _normalised_entropy(self.usage)
        out.update({k: v for k, v in self._last.items() if k in ("balance", "margin", "route")})
        return out

    @torch.no_grad()
    def routing_matrix(self, h: torch.Tensor,
                       subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean routing weight per subject and expert: ``(subject ids (S,), matrix (S, E))``."""
        if not self.has_routed:
            raise ValueError("routing_matrix needs branch 'fused' or 'routed'")
        weights = self.router(self.encode(self.norm(h))).weights
        ids, inverse = torch.unique(subject, sorted=True, return_inverse=True)
        matrix = torch.zeros(len(ids), weights.shape[1], device=weights.device)
        matrix.index_add_(0, inverse, weights)
        return ids, matrix / torch.bincount(inverse, minlength=len(ids))[:, None]

    @torch.no_grad()
    def routing_diagnostics(self, h: torch.Tensor, subject: torch.Tensor) -> dict[str, float]:
        """Expert-usage entropy, load balance, per-subject routing consistency and α on ``h``.

        Consistency: per subject, the share of its samples whose top-1 expert is the subject's
        most frequent one, averaged over subjects (1 = every subject has one expert).
        """
        routing = self.router(self.encode(self.norm(h))) if self.has_routed else None
        if routing is None:
            return {"alpha": self.alpha}
        top1 = routing.weights.argmax(1)
        consistency = []
        for s in torch.unique(subject):
            counts = torch.bincount(top1[subject == s], minlength=routing.weights.shape[1])
            consistency.append(float(counts.max()) / float(counts.sum()))
        return {"expert_entropy": _normalised_entropy(routing.weights.mean(0)),
                "load_balance": float(load_balance_loss(routing.probs, routing.weights)) + 1.0,
                "routing_consistency": sum(consistency) / len(consistency),
                "alpha": self.alpha}


def _normalised_entropy(usage: torch.Tensor) -> float:
    """Entropy of an expert-usage distribution divided by log E (1 = uniform use)."""
    p = usage / usage.sum()
    if len(p) < 2:
        return 1.0
    return float(-(p * p.clamp_min(1e-12).log()).sum() / math.log(len(p)))

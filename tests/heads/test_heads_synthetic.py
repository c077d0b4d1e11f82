"""Synthetic cross-subject check: the fused shared/routed head beats the shared-only head (LOSO).

Known structure, in feature space (D=16), 8 subjects in 4 groups of 2:
``h = o_g + j_s + y·(a·u + b·R_g v) + noise``, ``y = ±1``: a weak class direction ``u`` shared
by everyone, a strong one ``R_g v`` rotated differently in every group (random orthogonal
``R_g``), a large group offset ``o_g`` and a small subject jitter ``j_s``. A subject-invariant
decoder can only rely on ``u``; the routed experts can pick their group's direction, and an
unseen subject is routed to its group's prototype by its features alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eegfm.heads import create_head

N_SUBJECTS, N_GROUPS, PER_SUBJECT, DIM = 8, 4, 48, 16


def make_features(seed: int, *, shared: float = 0.4, specific: float = 1.5,
                  offset: float = 4.0, jitter: float = 0.5, noise: float = 0.7):
    """Features ``h (N, D)``, labels ``(N,)`` and subject ids ``(N,)``."""
    gen = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(DIM, generator=gen), dim=0)
    v = F.normalize(torch.randn(DIM, generator=gen), dim=0)
    offsets = offset * F.normalize(torch.randn(N_GROUPS, DIM, generator=gen), dim=1)
    w = F.normalize(torch.randn(DIM, generator=gen), dim=0)
    w = F.normalize(w - (w @ v) * v, dim=0)
    angles = 2 * torch.pi * torch.arange(N_GROUPS) / N_GROUPS  # v, w, -v, -w for 4 groups
    directions = torch.cos(angles)[:, None] * v + torch.sin(angles)[:, None] * w
    h, y, subject = [], [], []
    for s in range(N_SUBJECTS):
        group = s % N_GROUPS
        labels = torch.arange(PER_SUBJECT) % 2
        sign = (2.0 * labels - 1.0)[:, None]
        centre = offsets[group] + jitter * torch.randn(DIM, generator=gen)
        h.append(centre + sign * (shared * u + specific * directions[group])
                 + noise * torch.randn(PER_SUBJECT, DIM, generator=gen))
        y.append(labels)
        subject.append(torch.full((PER_SUBJECT,), s))
    return torch.cat(h), torch.cat(y), torch.cat(subject)


def as_tokens(h: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Tokens ``(N, 3, 2, D)`` whose masked mean is ``h`` plus a little token noise."""
    return h[:, None, None, :] + 0.3 * torch.randn(len(h), 3, 2, h.shape[1], generator=gen)


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    pred = logits.argmax(1)
    return sum(float((pred[y == c] == c).float().mean()) for c in (0, 1)) / 2


def loso_accuracy(branch: str, h, y, subject, *, seed: int = 0, steps: int = 30,
                  lr: float = 1e-2, batch: int = 256, spiking: str = "none",
                  **options) -> list[float]:
    """Balanced accuracy on each held-out subject after training on the others."""
    accuracies = []
    for test_subject in range(N_SUBJECTS):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        train = subject != test_subject
        head = create_head("shared_routed", DIM, 2, spiking=spiking, branch=branch,
                           dropout=0.0, **options)
        head.init_from_features(h[train], subject[train])
        optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4,
                                      foreach=True)
        for step in range(steps):
            head.set_progress(step / steps)
            idx = torch.nonzero(train).flatten()[torch.randint(int(train.sum()), (batch,),
                                                               generator=gen)]
            out = head.training_loss(as_tokens(h[idx], gen), None, y[idx], subject=subject[idx],
                                     pair_tokens=as_tokens(h[idx], gen))
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            logits = head(as_tokens(h[~train], gen), None)
        accuracies.append(balanced_accuracy(logits, y[~train]))
    return accuracies


def test_fused_head_beats_shared_only_head_across_subjects():
    h, y, subject = make_features(seed=0)
    shared = loso_accuracy("shared", h, y, subject)
    fused = loso_accuracy("fused", h, y, subject)
    shared_mean, fused_mean = sum(shared) / len(shared), sum(fused) / len(fused)
    # Measured (seed 0): shared 0.656, fused 0.935; over seeds 0-5 the gap is 0.09-0.28.
    assert fused_mean >= shared_mean + 0.1, (shared, fused)
    assert sum(f > s for f, s in zip(fused, shared, strict=True)) >= 6, (shared, fused)

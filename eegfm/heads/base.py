"""The Head protocol every fine-tuning head follows, its loss record, masked pooling, and
``build_head`` (a head class from options; :func:`eegfm.heads.create_head` picks the class)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.spiking import SPIKING_MODES, NeuronConfig

NEURON_OPTIONS = tuple(f.name for f in dataclasses.fields(NeuronConfig))


class HeadLoss(NamedTuple):
    """What ``Head.training_loss`` returns: the scalar to minimise, the logits, named parts."""

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, float]


def check_tokens(tokens: torch.Tensor, channel_mask: torch.Tensor | None,
                 embed_dim: int) -> torch.Tensor:
    """Validate ``tokens (B, C, P, D)`` and ``channel_mask (B, C)``; return a bool mask."""
    if tokens.dim() != 4:
        raise ValueError(f"head input must be tokens (B, C, P, D), got shape {tuple(tokens.shape)}")
    if tokens.shape[-1] != embed_dim:
        raise ValueError(f"tokens have feature size {tokens.shape[-1]} but the head was built "
                         f"with embed_dim={embed_dim}: build it with the encoder's embed_dim")
    batch, channels = tokens.shape[:2]
    if channel_mask is None:
        return torch.ones(batch, channels, dtype=torch.bool, device=tokens.device)
    if channel_mask.shape != (batch, channels):
        raise ValueError(f"channel_mask must be (B, C) = {(batch, channels)}, "
                         f"got {tuple(channel_mask.shape)}")
    channel_mask = channel_mask.bool()
    if torch.compiler.is_exporting():
        # an exported graph cannot branch on data: it checks the same at run time
        torch._assert_async(channel_mask.any(1).all(),
                            "a sample has no real channel (channel_mask all False)")
    elif not bool(channel_mask.any(1).all()):
        empty = torch.nonzero(~channel_mask.any(1)).flatten().tolist()
        raise ValueError(f"samples {empty} have no real channel (channel_mask all False)")
    return channel_mask


def masked_mean_pool(tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real channels and all patches: ``(B, C, P, D), (B, C) -> h (B, D)``.

    This is the ``h`` that :meth:`Head.init_from_features` expects.
    """
    if channel_mask is None:
        return tokens.mean(dim=(1, 2))
    weight = channel_mask.to(tokens.dtype)[:, :, None, None]
    total = (tokens * weight).sum(dim=(1, 2))
    return total / (weight.sum(dim=(1, 2)) * tokens.shape[2]).clamp_min(1.0)


class Head(nn.Module):
    """Base of the fine-tuning heads: tokens in, logits out; training adds losses.

    Subclasses implement :meth:`forward`; the default :meth:`training_loss` is cross-entropy.
    ``spiking`` is ``'none'``, ``'lif'`` or ``'int'``; ``config`` holds the
    :func:`~eegfm.heads.create_head` arguments that rebuild the head.
    """

    needs_pair_view: bool = False
    uses_subject: bool = False

    def __init__(self, embed_dim: int, n_classes: int, spiking: str = "none",
                 neuron: NeuronConfig | None = None):
        super().__init__()
        # one output is a regression read-out (braindecode's EEGRegressor, through the adapter)
        if embed_dim < 1 or n_classes < 1:
            raise ValueError(f"need embed_dim >= 1 and n_classes >= 1, got {embed_dim} and "
                             f"{n_classes}")
        if spiking not in SPIKING_MODES:
            raise ValueError(f"spiking must be one of {SPIKING_MODES}, got {spiking!r}")
        self.embed_dim, self.n_classes, self.spiking = embed_dim, n_classes, spiking
        self.neuron_config = neuron or NeuronConfig()
        self.progress = 0.0
        self.config: dict[str, Any] = {}

    def pool(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """Masked mean pooled features ``h (B, D)`` (the input of ``init_from_features``)."""
        return masked_mean_pool(tokens, check_tokens(tokens, channel_mask, self.embed_dim))

    def training_loss(self, tokens: torch.Tensor, channel_mask: torch.Tensor | None,
                      target: torch.Tensor, *, subject: torch.Tensor | None = None,
                      pair_tokens: torch.Tensor | None = None,
                      pair_channel_mask: torch.Tensor | None = None) -> HeadLoss:
        """Cross-entropy on the logits (plain heads ignore subjects and pair views)."""
        logits = self(tokens, channel_mask)
        loss = F.cross_entropy(logits, target)
        return HeadLoss(loss, logits, {"ce": float(loss.detach())})

    def set_progress(self, fraction: float) -> None:
        """Tell the head how far training is (0..1), for warm-ups."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"training progress must be in [0, 1], got {fraction}")
        self.progress = float(fraction)

    def init_from_features(self, h: torch.Tensor, subject: torch.Tensor) -> None:
        """Data-driven initialisation from pooled training features; plain heads need none."""

    def diagnostics(self) -> dict[str, float]:
        """Scalars worth logging during training (empty for plain heads)."""
        return {}

    def ann_twin(self) -> Head:
        """The same head without spikes (same weights where names match), for energy ratios."""
        if not self.config:
            raise ValueError("ann_twin needs a head built by eegfm.heads.create_head")
        twin = build_head(type(self), **{**self.config, "spiking": "none"})
        twin.load_state_dict(self.state_dict(), strict=False)
        return twin.to(next(self.parameters()).device).train(self.training)


def own_options(cls: type[Head]) -> list[str]:
    """Keyword options of a head class beyond the ones every head takes."""
    fixed = {"self", "embed_dim", "n_classes", "spiking", "neuron"}
    return [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]


def build_head(cls: type[Head], name: str, embed_dim: int, n_classes: int,
               spiking: str = "none", **options: Any) -> Head:
    """Build head class ``cls`` (registered as ``name``): neuron options go to
    :class:`~eegfm.spiking.NeuronConfig`, the rest to the class; ``head.config`` rebuilds it."""
    if spiking not in SPIKING_MODES:
        raise ValueError(f"--spiking must be one of {', '.join(SPIKING_MODES)}, got {spiking!r}")
    neuron_options = {k: options.pop(k) for k in list(options) if k in NEURON_OPTIONS}
    allowed = own_options(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"head '{name}' has no option(s) {unknown}; it accepts "
                        f"{sorted([*allowed, *NEURON_OPTIONS])}")
    if spiking == "int":
        neuron_options["timesteps"] = 1  # integer training runs one step; D is max_level
    head = cls(embed_dim, n_classes, spiking, NeuronConfig(**neuron_options), **options)
    head.config = {"name": name, "embed_dim": embed_dim, "n_classes": n_classes,
                   "spiking": spiking, **neuron_options, **options}
    return head

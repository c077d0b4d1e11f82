"""Optimisation helpers shared by pretraining, fine-tuning and the baselines.

``WarmupCosine`` is the learning-rate factor of every run (``LambdaLR``); ``param_groups``
builds the AdamW parameter groups: weight decay on weight matrices only, and optionally one
learning rate per layer (layer-wise decay, as BEiT/MAE fine-tune a ViT).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class WarmupCosine:
    """LR factor: linear warm-up from 0 to 1 over `warmup_steps`, then cosine down to
    `min_ratio` at `total_steps` (flat afterwards).

    A callable object rather than a closure: ``LambdaLR.state_dict`` saves an object's fields,
    so a resumed pretraining run keeps the schedule length of its first start; the field names
    are in pretraining checkpoints and must not change.
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        """The factor of the learning rate at optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            # (step + 1): the first step already trains, at lr / warmup_steps
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of ``model``'s parameters trained without weight decay.

    Biases and norms (1-D), embedding tables (``nn.Embedding``), names listed by a timm-style
    ``no_weight_decay()`` method and learned tokens (``*token``): decaying them towards zero
    only shrinks offsets, scales and positions.
    """
    skip: set[str] = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if hasattr(module, "no_weight_decay"):
            skip |= {f"{dot}{name}" for name in module.no_weight_decay()}
        if isinstance(module, nn.Embedding):
            skip |= {f"{dot}{name}" for name, _ in module.named_parameters()}
    return {
        name for name, param in model.named_parameters()
        if param.ndim < 2 or name in skip or name.rsplit(".", 1)[-1].endswith("token")
    }  # fmt: skip


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float | None = None,
    *,
    layer_of: Callable[[str], int] | None = None,
    num_layers: int = 1,
    layer_decay: float | None = None,
    lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW groups of ``model``'s trainable parameters: a decayed and a plain group per layer.

    Without ``layer_of`` there is one layer at ``lr`` (None: the optimizer's default).
    ``layer_of(name)`` puts a parameter in layer ``0 .. num_layers - 1``; layer ``l`` then
    trains at ``lr x lr_scale x layer_decay ** (num_layers - 1 - l)`` (``layer_decay`` None:
    every layer at ``lr x lr_scale``), so the layers nearest the input move least. Empty
    groups are left out; groups come in layer order, the decayed one first.
    """
    if layer_of is not None and lr is None:
        raise ValueError("layer-wise learning rates (layer_of) need the base lr")
    plain = no_weight_decay(model)
    by_layer: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            by_layer.setdefault(0 if layer_of is None else layer_of(name), []).append(
                (name, param))
    groups = []
    for layer, named in sorted(by_layer.items()):
        group_lr = lr
        if layer_of is not None:
            top = num_layers - 1
            group_lr = lr * (lr_scale * (layer_decay ** (top - layer) if layer_decay else 1))
        extra = {} if group_lr is None else {"lr": group_lr}
        groups += [
            {"params": [p for n, p in named if n not in plain], **extra,
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if n in plain], **extra, "weight_decay": 0.0},
        ]  # fmt: skip
    return [g for g in groups if g["params"]]


def vit_layer_of(depth: int) -> Callable[[str], int]:
    """Layer index of a ViT-style encoder's parameter names, for :func:`param_groups`.

    0 for the embeddings (everything before the blocks), ``i + 1`` for ``blocks.i.*``, and
    ``depth + 1`` for the final norm (``norm*``): ``num_layers = depth + 2``.
    """

    def layer_of(name: str) -> int:
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith("norm"):
            return depth + 1
        return 0

    return layer_of

"""Supervised networks trained from scratch in the fine-tuning harness.

braindecode's EEGNet, ShallowFBCSPNet and EEGConformer, and eegfm's DBConformer (an
``EEGModuleMixin`` model, :mod:`eegfm.models.dbconformer`). They see the same windows, splits,
sampler and early stopping as the encoder models. A fixed-montage network needs the same
channels in every window: the channels common to all recordings of the task, in a fixed order.
The signal is divided by ``input_scale_uv`` (a constant, so amplitude differences between
windows and subjects are kept).
"""

from __future__ import annotations

from typing import Any

import braindecode.models as braindecode_models
import torch
import torch.nn.functional as F
from torch import nn

from eegfm.heads import HeadLoss
from eegfm.models.classifier import Batch
from eegfm.models.dbconformer import DBConformer

# config name -> the class; EEGNet was EEGNetv4 before braindecode 1.0
NETWORKS: dict[str, type[nn.Module] | None] = {
    "eegnet": (getattr(braindecode_models, "EEGNet", None)
               or getattr(braindecode_models, "EEGNetv4", None)),
    "shallow": getattr(braindecode_models, "ShallowFBCSPNet", None),
    "conformer": getattr(braindecode_models, "EEGConformer", None),
    "dbconformer": DBConformer,
}


def network_class(name: str) -> type[nn.Module]:
    """The model class of a from-scratch network baseline."""
    if name not in NETWORKS:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(NETWORKS)}")
    cls = NETWORKS[name]
    if cls is None:
        raise ImportError(f"braindecode has no model for baseline {name!r}; braindecode>=1.0 "
                          "provides EEGNet, ShallowFBCSPNet and EEGConformer")
    return cls


def default_options(name: str, sfreq: float) -> dict[str, Any]:
    """Our defaults for the baselines (each can be overridden in ``baselines.<name>``).

    EEGNet: the temporal kernel spans half a second (as in its paper), and batch-norm running
    statistics use PyTorch's momentum 0.1 rather than braindecode's 0.01 (Keras' 0.99): with
    the few hundred steps a BCI dataset gives, 0.01 leaves the running variance near its
    initial 1, and eval-mode outputs shrink to near-constant logits.
    """
    if name == "eegnet":
        return {"kernel_length": round(sfreq / 2), "batch_norm_momentum": 0.1}
    return {}


class BraindecodeClassifier(nn.Module):
    """A from-scratch network on ``(B, C, T)`` windows of fixed channels, in the harness API."""

    def __init__(self, name: str, n_chans: int, n_classes: int, n_times: int, sfreq: float,
                 *, input_scale_uv: float = 50.0, **options: Any):
        super().__init__()
        if input_scale_uv <= 0:
            raise ValueError(f"baselines.input_scale_uv must be positive, got {input_scale_uv}")
        cls = network_class(name)
        kwargs = {**default_options(name, sfreq), **options}
        try:
            self.net = cls(n_chans=n_chans, n_outputs=n_classes, n_times=n_times, sfreq=sfreq,
                           **kwargs)
        except TypeError as error:
            raise ValueError(f"baselines.{name}: {cls.__name__} rejects the options "
                             f"{kwargs}: {error}") from error
        self.name, self.input_scale_uv = cls.__name__, float(input_scale_uv)
        self.config = {"model": cls.__name__, "n_chans": n_chans, "n_outputs": n_classes,
                       "n_times": n_times, "sfreq": sfreq, "input_scale_uv": input_scale_uv,
                       **kwargs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, T)`` µV -> logits ``(B, K)``."""
        return self.net(x / self.input_scale_uv)

    def logits(self, batch: Batch) -> torch.Tensor:
        """Logits of a batch (its ``x`` holds the common channels)."""
        return self(batch.x)

    def training_loss(self, batch: Batch) -> HeadLoss:
        """Cross-entropy, as the plain heads."""
        logits = self(batch.x)
        loss = F.cross_entropy(logits, batch.y)
        return HeadLoss(loss, logits, {"ce": float(loss.detach())})

    def selection_state(self) -> dict[str, torch.Tensor]:
        """Copy of all weights (everything trains)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_selection_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore weights saved by :meth:`selection_state`."""
        self.load_state_dict(state)

"""The lean training loop of the fine-tuning harness: one fit per fold and model.

Why not a Lightning ``Trainer`` here (pretraining uses one): a fold is small (a few thousand
windows), and a run is many fits (24 LOSO folds x several models). On the 2-core CPU a
``Trainer.fit`` costs ~2.6 s more than this loop for the same 30-epoch linear probe (3.1 s vs
0.5 s, docs/finetune.md), i.e. minutes of pure overhead per run. The loop keeps what matters:
class-balanced sampling, AdamW with warm-up + cosine, gradient clipping, a NaN guard, early
stopping on validation subjects, best-epoch restore, CSV (and optional TensorBoard) logs.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.fabric import Fabric
from sklearn.metrics import balanced_accuracy_score

from eegfm.config import ConfigError
from eegfm.console import progress as progress_bar
from eegfm.model_folder import first_line
from eegfm.models.classifier import EncoderClassifier
from eegfm.training.finetune.config import TrainConfig
from eegfm.training.finetune.module import (
    WindowTensors,
    autocast,
    on_device,
    optimizer_groups,
)
from eegfm.training.optim import WarmupCosine


@dataclass
class FitResult:
    """What one fit did: per-epoch curves, the selected epoch, time and skipped steps."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_balanced_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; the weights of this epoch are restored (0: the start's)
    seconds: float = 0.0
    skipped_steps: int = 0  # non-finite losses, skipped
    diagnostics: dict[str, float] = field(default_factory=dict)  # the head's, at the end


def epoch_order(y: np.ndarray, rng: np.random.Generator, balance: str) -> np.ndarray:
    """Positions into ``y`` for one epoch: a permutation, or class-balanced draws.

    ``balance='sampler'`` draws ``len(y)`` windows with replacement, each class equally likely,
    so an imbalanced task (eegmat: 3 rest windows per task window) does not teach the majority.
    """
    if balance == "none":
        return rng.permutation(len(y))
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return rng.choice(len(y), size=len(y), replace=True, p=weights / weights.sum())


def balanced_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the classes present of their mean cross-entropy (validation loss)."""
    losses = F.cross_entropy(logits, y, reduction="none")
    per_class = [losses[y == c].mean() for c in torch.unique(y)]
    return float(torch.stack(per_class).mean())


def make_fabric(cfg: TrainConfig) -> Fabric:
    """The device and precision that fits and predictions run on (``train.accelerator``...)."""
    try:
        with warnings.catch_warnings():
            # Lightning's SLURM check warns whenever `srun` is installed, even outside a job
            warnings.filterwarnings("ignore", message="The `srun` command is available")
            return Fabric(accelerator=cfg.accelerator, devices=cfg.devices,
                          precision=cfg.precision)
    except (RuntimeError, ValueError) as error:  # e.g. cuda asked for, none present
        first = first_line(error)
        raise ConfigError(f"accelerator {cfg.accelerator}, precision {cfg.precision}: "
                          f"{first}") from error


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data: WindowTensors, index: np.ndarray,
                   batch_size: int, fabric: Fabric | None = None) -> torch.Tensor:
    """Logits ``(len(index), K)`` in eval mode, float32 on the CPU."""
    model.eval()
    if fabric is not None:
        model.to(fabric.device)
    out = []
    for s in range(0, len(index), batch_size):
        with autocast(fabric):
            logits = model.logits(on_device(data.batch(index[s:s + batch_size]), fabric))
        out.append(logits.float().cpu())
    return torch.cat(out)


def _validate(model: torch.nn.Module, data: WindowTensors, val: np.ndarray, cfg: TrainConfig,
              fabric: Fabric) -> tuple[float, float]:
    """(class-balanced cross-entropy, balanced accuracy) of the model on ``val``."""
    logits = predict_logits(model, data, val, cfg.eval_batch_size, fabric)
    y_val = data.y[val]
    return (balanced_cross_entropy(logits, y_val),
            float(balanced_accuracy_score(y_val.numpy(), logits.argmax(1).numpy())))


def _score(validation: tuple[float, float], monitor: str) -> float:
    """What early stopping minimises: the validation loss or minus the balanced accuracy."""
    return validation[0] if monitor == "val_loss" else -validation[1]


class _EpochLog:
    """Per-epoch rows to CSV (rewritten each epoch) and optionally TensorBoard."""

    def __init__(self, csv_path: Path | None, tensorboard_dir: Path | None):
        self.rows: list[dict[str, Any]] = []
        self.csv_path = csv_path
        self.writer = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.csv_path is not None:
            pd.DataFrame(self.rows).to_csv(self.csv_path, index=False)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def fit(model: torch.nn.Module, data: WindowTensors, train: np.ndarray, val: np.ndarray,
        cfg: TrainConfig, *, lr: float, weight_decay: float, seed: int,
        epochs: int | None = None, stop_after: int | None = None,
        pair_index: np.ndarray | None = None, csv_path: Path | None = None,
        tensorboard_dir: Path | None = None, progress: bool = False, desc: str = "fit",
        fabric: Fabric | None = None, keep_start: bool = False) -> FitResult:
    """Train ``model`` on windows ``train``; select the epoch on ``val`` (may be empty).

    ``epochs`` sets the schedule length (default ``cfg.epochs``); ``stop_after`` ends training
    earlier without changing the schedule (a refit for the epoch count chosen in the folds).
    ``pair_index[i]`` is the neighbouring window of window ``i`` for heads with pair views.
    ``fabric`` (default: the CPU in float32) places the model and runs its precision: batches
    are moved to its device, the loss is computed under its autocast, and its backward and
    optimizer step apply a gradient scaler for 16-mixed. ``keep_start`` makes the starting
    weights a candidate of the selection too (``best_epoch`` 0): a fit that starts from a solved
    head (LP-FT) then never ends worse on ``val`` than where it started.
    """
    fabric = fabric or make_fabric(TrainConfig())
    started = time.perf_counter()
    epochs = epochs or cfg.epochs
    last_epoch = min(epochs, stop_after or epochs)
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, lr, weight_decay, cfg.encoder_lr_scale, cfg.layer_decay))
    schedule = WarmupCosine(round(cfg.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # the wrapped optimizer shares the param groups the scheduler sets; the model's own methods
    # (training_loss, logits) run on the unwrapped module under the fabric's autocast
    wrapped, optimizer = fabric.setup(model, optimizer)
    head = model.head if isinstance(model, EncoderClassifier) else None
    result, log = FitResult(), _EpochLog(csv_path, tensorboard_dir)
    best_score, best_state, since_best = None, None, 0
    if keep_start and len(val):
        start = _validate(model, data, val, cfg, fabric)
        best_score, best_state = _score(start, cfg.monitor), model.selection_state()
        log.add({"epoch": 0, "val_loss": start[0], "val_balanced_accuracy": start[1],
                 "seconds": time.perf_counter() - started})
    y_train = data.y[train].numpy()
    epoch_bar = progress_bar(range(last_epoch), enabled=progress, desc=desc, unit="epoch",
                             leave=False, position=1)
    step = 0
    for epoch in epoch_bar:
        model.train()
        losses, parts = [], {}
        order = train[epoch_order(y_train, rng, cfg.balance)]
        for s in range(0, len(order), cfg.batch_size):
            index = order[s:s + cfg.batch_size]
            if head is not None:
                head.set_progress(min(step / max(epochs * steps_per_epoch - 1, 1), 1.0))
            batch = data.batch(index, None if pair_index is None else pair_index[index])
            with fabric.autocast():
                out = model.training_loss(on_device(batch, fabric))
            step += 1
            if not torch.isfinite(out.loss):
                result.skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                continue
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(out.loss)
            if cfg.grad_clip:
                # a non-finite norm is clipped as before (the NaN guard is on the loss)
                fabric.clip_gradients(wrapped, optimizer, max_norm=cfg.grad_clip,
                                      error_if_nonfinite=False)
            optimizer.step()
            scheduler.step()
            losses.append(float(out.loss.detach()))
            for key, value in out.parts.items():
                parts.setdefault(key, []).append(value)
        if not losses:
            raise FloatingPointError(f"{desc}: every training step of epoch {epoch + 1} gave a "
                                     "non-finite loss; lower train.lr or check the input data")
        result.train_loss.append(float(np.mean(losses)))
        row = {"epoch": epoch + 1, "train_loss": result.train_loss[-1],
               "lr": optimizer.param_groups[0]["lr"]}
        if len(val):
            val_loss, val_bacc = _validate(model, data, val, cfg, fabric)
            result.val_loss.append(val_loss)
            result.val_balanced_accuracy.append(val_bacc)
            row.update(val_loss=val_loss, val_balanced_accuracy=val_bacc)
            score = _score((val_loss, val_bacc), cfg.monitor)
            if best_score is None or score < best_score:
                best_score, best_state, since_best = score, model.selection_state(), 0
                result.best_epoch = epoch + 1
            else:
                since_best += 1
        row.update({k: float(np.mean(v)) for k, v in parts.items()},
                   seconds=time.perf_counter() - started)
        log.add(row)
        epoch_bar.set_postfix({k: f"{row[k]:.3f}" for k in
                               ("train_loss", "val_loss", "val_balanced_accuracy") if k in row})
        if len(val) and since_best >= cfg.patience and epoch + 1 >= cfg.min_epochs:
            break
    log.close()
    if best_state is not None:
        model.load_selection_state(best_state)
    else:
        result.best_epoch = len(result.train_loss)
    result.diagnostics = dict(head.diagnostics()) if head is not None else {}
    result.seconds = time.perf_counter() - started
    return result


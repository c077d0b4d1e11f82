"""Pretraining callbacks: per-step metrics with throughput, encoder export, window audit log.

All files live in the run directory (`trainer.default_root_dir`), which stays the same when a
job is requeued; each callback drops what it wrote past the step a run resumes from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from eegfm.training.logging import ResumableCSV

METRICS_FILE = "metrics.csv"
ENCODER_FOLDER = "encoder"


class StepMetricsLogger(L.Callback):
    """Writes `RUN_DIR/metrics.csv`: one row per optimizer step with the module's step metrics
    (loss, loss per mask kind, zero baseline, lr, grad norm, skipped) plus samples/s, tokens/s
    (all ranks together) and the time the step waited for data.

    Rows are flushed every `flush_every_n_steps` steps and before every checkpoint is written,
    so after a kill at any point the file holds every step up to the checkpoint resumed from.
    """

    def __init__(self, flush_every_n_steps: int = 50) -> None:
        self.flush_every_n_steps = max(1, int(flush_every_n_steps))
        self.csv: ResumableCSV | None = None
        self._t_end: float | None = None
        self._t_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the log and forget rows of steps after the one this run starts from."""
        self._t_end = time.perf_counter()
        if not trainer.is_global_zero:
            return
        self.csv = ResumableCSV(Path(trainer.default_root_dir) / METRICS_FILE)
        dropped = self.csv.truncate_after(trainer.global_step)
        if dropped:
            rank_zero_info(f"metrics.csv: dropped {dropped} rows after step {trainer.global_step}")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Mark when the batch arrived (the gap since the last step is data waiting)."""
        self._t_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """Record the step just finished."""
        now = time.perf_counter()
        step_time = now - (self._t_end if self._t_end is not None else self._t_start)
        data_wait = self._t_start - self._t_end if self._t_end is not None else 0.0
        self._t_end = now
        world = trainer.world_size
        samples = batch["x"].shape[0] * world
        patches = batch["x"].shape[-1] // pl_module.patch_len
        tokens = batch["channel_mask"].sum() * patches * world
        throughput = {
            "samples_per_s": samples / step_time,
            "tokens_per_s": tokens / step_time,
            "data_wait_s": data_wait,
            "step_time_s": step_time,
        }
        # a host tensor: a Python float would be copied to the device (a synchronisation) and a
        # progress-bar value read back each step, so it is one only when a bar is shown
        pl_module.log("train/samples_per_s", torch.tensor(samples / step_time), on_step=True,
                      prog_bar=trainer.progress_bar_callback is not None)
        if self.csv is None:
            return
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        row.update(getattr(pl_module, "step_metrics", {}))
        row.update(throughput)
        self.csv.append(row)
        if trainer.global_step % self.flush_every_n_steps == 0:
            self.csv.flush()

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        """Rows reach the disk before the checkpoint that covers them."""
        if self.csv is not None:
            self.csv.flush()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Flush the tail."""
        if self.csv is not None:
            self.csv.flush()

    def on_exception(self, trainer: L.Trainer, *args: Any) -> None:
        """Keep what was logged; a resume truncates past its checkpoint anyway."""
        if self.csv is not None:
            self.csv.flush()


class EncoderExport(L.Callback):
    """Writes the model folder `RUN_DIR/encoder/` (what `eegfm.from_pretrained` and fine-tuning
    read) with every Lightning checkpoint, and a final `checkpoints/last.ckpt` + `encoder/` at
    the end."""

    def __init__(self) -> None:
        self._exported_step: int | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        """Export the encoder once per saved step (rank 0; written to a temp name, renamed)."""
        if self._exported_step == trainer.global_step:
            return
        self._exported_step = trainer.global_step
        if trainer.is_global_zero:
            export_encoder(pl_module, Path(trainer.default_root_dir) / ENCODER_FOLDER, trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final step unless a checkpoint of it exists already."""
        if self._exported_step == trainer.global_step:
            return
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(last)


def export_encoder(pl_module: L.LightningModule, path: Path, trainer: L.Trainer) -> None:
    """Save the module's encoder as a model folder, with the step and the pretraining options."""
    extra = {"global_step": int(trainer.global_step), "pretrain_hparams": dict(pl_module.hparams)}
    pl_module.encoder.save_pretrained(path, extra=extra)  # each file: temp name + rename


class WindowAuditLog(L.Callback):
    """Writes `RUN_DIR/windows/rank{r}.csv`: (step, recording_id, start) of every window each
    rank trained on, to audit sampling (e.g. that DDP ranks never share a window)."""

    def __init__(self) -> None:
        self.csv: ResumableCSV | None = None

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Open this rank's log, dropping rows past the resumed step."""
        path = Path(trainer.default_root_dir) / "windows" / f"rank{trainer.global_rank}.csv"
        self.csv = ResumableCSV(path)
        self.csv.truncate_after(trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, *args: Any
    ) -> None:
        """One row per window of the batch."""
        if self.csv is None:
            return
        step = trainer.global_step
        for recording_id, start in zip(batch["recording_id"], batch["start"].tolist(), strict=True):
            self.csv.append({"step": step, "recording_id": recording_id, "start": start})

    def on_save_checkpoint(self, *args: Any) -> None:
        """Flush before the checkpoint is written."""
        if self.csv is not None:
            self.csv.flush()

    on_train_end = on_save_checkpoint
    on_exception = on_save_checkpoint

"""Pretraining callbacks: per-step metrics with throughput, encoder export, window audit log.

All files live in the run directory (`trainer.default_root_dir`), which stays the same when a
job is requeued; each callback drops what it wrote past the step a run resumes from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from eegfm.training.pretrain.metrics_csv import ResumableCSV

METRICS_FILE = "metrics.csv"
ENCODER_FOLDER = "encoder"
REQUEUE, TERMINATE = 0, 1  # slots of the signal flags
# set by the signal handlers of this process, read at step boundaries (one per process)
_FLAGS = torch.zeros(2, dtype=torch.int32)


def _flag_requeue(signum: int, frame: Any) -> None:
    _FLAGS[REQUEUE] = 1


def _flag_terminate(signum: int, frame: Any) -> None:
    _FLAGS[TERMINATE] = 1


def pending_signals() -> tuple[bool, bool]:
    """(requeue signal, SIGTERM) received by this process and not yet acted on."""
    return bool(_FLAGS[REQUEUE]), bool(_FLAGS[TERMINATE])


def install_requeue_flag() -> None:
    """Flag SLURM's requeue signal (SIGUSR1) from process start, inside a SLURM job.

    Without a handler SIGUSR1 ends the process; one installed before Lightning's also keeps
    Lightning from writing its checkpoint inside the handler (see `StepBoundarySignals`).
    """
    if os.environ.get("SLURM_JOB_ID"):
        signal.signal(signal.SIGUSR1, _flag_requeue)


class StepBoundarySignals(L.Callback):
    """Acts on SLURM's requeue signal and on SIGTERM at a step boundary every rank agrees on.

    Lightning writes the requeue checkpoint inside its SIGUSR1 handler and broadcasts inside its
    SIGTERM handler, wherever the signal finds each rank: with DDP that meets the other ranks'
    collectives mid-step (Lightning issue #21406: jobs that hang until killed). Here the
    handlers only set flags. Before each step the ranks combine them (a max all-reduce of two
    integers over a CPU gloo group, so no device synchronisation), and all act at the same step:
    on the requeue signal every rank writes RUN_DIR/hpc_ckpt_N.ckpt (the state after the
    previous step) and rank 0 runs `scontrol requeue`, training going on until SLURM's SIGTERM;
    on SIGTERM the run ends before the step (`SIGTERMException`: exit 143).
    """

    def __init__(self) -> None:
        self.group: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Replace Lightning's handlers (registered just before) with the flag setters; a
        requeue signal flagged during start-up is kept."""
        _FLAGS[TERMINATE] = 0
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            signal.signal(environment.requeue_signal or signal.SIGUSR1, _flag_requeue)
        else:  # not a requeueing SLURM job (interactive, torchrun, auto_requeue off)
            _FLAGS[REQUEUE] = 0
            if signal.getsignal(signal.SIGUSR1) is _flag_requeue:
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, _flag_terminate)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            self.group = dist.new_group(backend="gloo")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Act on the signals any rank received since the last step."""
        flags = _FLAGS.clone()
        if self.group is not None:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        if flags[REQUEUE]:
            _FLAGS[REQUEUE] = 0
            self._save_and_requeue(trainer)
        if flags[TERMINATE]:
            raise SIGTERMException

    def _save_and_requeue(self, trainer: L.Trainer) -> None:
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every rank: the strategy decides who writes
        if not trainer.is_global_zero:
            return
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = (f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array
               else os.environ.get("SLURM_JOB_ID", ""))
        rank_zero_info(f"requeue signal: saved {path} after step {trainer.global_step}; "
                       f"requeueing SLURM job {job}")
        try:
            code = subprocess.call(["scontrol", "requeue", job])
        except OSError as error:  # no scontrol here
            code = f"{type(error).__name__}: {error}"
        if code != 0:
            rank_zero_warn(f"`scontrol requeue {job}` failed ({code}): resubmit the job to "
                           f"resume from {path}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Drop the gloo group (Lightning restores the signal handlers it found)."""
        if self.group is not None and dist.is_initialized():
            dist.destroy_process_group(self.group)
        self.group = None


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

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Export a finished run's encoder that its run directory lacks (a run resumed at its
        last step trains nothing and Lightning skips `on_train_end`; an earlier eegfm wrote
        `encoder.pt` instead of the folder)."""
        folder = Path(trainer.default_root_dir) / ENCODER_FOLDER
        if trainer.is_global_zero and not (folder / "config.json").is_file():
            export_encoder(pl_module, folder, trainer)


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

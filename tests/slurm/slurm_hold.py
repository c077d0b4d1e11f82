"""A callback for the SLURM tests (imported by `eegfm pretrain` inside a job, via PYTHONPATH)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class HoldAt(L.Callback):
    """After optimizer step `step`, every rank waits until SIGTERM arrives (or `timeout_s`).

    A run of a few dozen steps ends long before SLURM's time-limit signal; holding keeps it
    alive until the signal comes, and holds every rank at the same point. Each rank writes
    RUN_DIR/held-rank{r} when it starts waiting, so a test knows when to `scancel`. A resumed
    run starts past `step` and does not hold again.
    """

    def __init__(self, step: int, timeout_s: float = 300.0) -> None:
        self.step, self.timeout_s = step, timeout_s

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        Path(trainer.default_root_dir, f"held-rank{trainer.global_rank}").write_text(
            str(self.step)
        )
        deadline = time.monotonic() + self.timeout_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.2)  # signal handlers (requeue, SIGTERM) run between these sleeps

"""A callback for the SLURM tests (imported by `eegfm pretrain` inside a job, via PYTHONPATH)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from eegfm.training.pretrain.callbacks import pending_signals


class HoldAt(L.Callback):
    """After optimizer step `step`, every rank waits until a signal is pending (or `timeout_s`);
    if it was SLURM's requeue signal, the ranks wait again after the next step until SIGTERM.

    A run of a few dozen steps ends long before SLURM's time-limit signal; holding keeps it
    alive until the signal comes, and holds every rank at the same point, so the step a run
    stops after is known: `step` for a SIGTERM (`scancel`), `step + 1` for a requeue (the
    requeue checkpoint is written before step + 1, and SLURM's SIGTERM follows). Each rank
    writes RUN_DIR/held-rank{r} when it starts waiting, so a test knows when to `scancel`. A
    resumed run starts past `step` and does not hold again.
    """

    def __init__(self, step: int, timeout_s: float = 300.0) -> None:
        self.step, self.timeout_s = step, timeout_s
        self.requeued = False

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            Path(trainer.default_root_dir, f"held-rank{trainer.global_rank}").write_text(
                str(self.step)
            )
            self._wait(lambda: any(pending_signals()))
            self.requeued = pending_signals()[0]
        elif trainer.global_step == self.step + 1 and self.requeued:
            self._wait(lambda: pending_signals()[1])

    def _wait(self, ready) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)  # the signal handlers run between these sleeps

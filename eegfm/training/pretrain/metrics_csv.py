"""A per-step CSV log that survives requeues: appends, never deletes, and drops rows past the
step a run resumes from so every step appears exactly once.

Lightning's `CSVLogger` deletes `metrics.csv` when its directory is reused, and it writes a
step's row only after `on_train_batch_end`, i.e. after that step's checkpoint: a kill between
the two loses the row for good. Rows here are flushed before every checkpoint is written.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch


class ResumableCSV:
    """Rows keyed by an integer `step` column, buffered in memory and appended on `flush()`.

    Values may be 0-d tensors; they are converted in one batch at flush time, so logging a step
    does not force a device synchronisation.
    """

    def __init__(self, path: os.PathLike) -> None:
        self.path = Path(path)
        self.fieldnames: list[str] = []
        self._pending: list[dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                self.fieldnames = next(csv.reader(f), [])

    def append(self, row: dict[str, Any]) -> None:
        """Buffer one row (must hold `step`)."""
        if "step" not in row:
            raise ValueError(f"a row of {self.path} has no 'step': {sorted(row)}")
        self._pending.append(row)

    def flush(self) -> None:
        """Append the buffered rows to the file (rewriting it once if new columns appeared)."""
        if not self._pending:
            return
        rows = _to_plain(self._pending)
        self._pending = []
        new_keys = [k for row in rows for k in row if k not in self.fieldnames]
        if new_keys:
            old_rows = self._read() if self.path.is_file() else []
            self.fieldnames = [*self.fieldnames, *dict.fromkeys(new_keys)]
            self._write_all([*old_rows, *rows])
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames).writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> int:
        """Drop rows (on disk and buffered) with `step` > `step`; returns how many were dropped."""
        self._pending = [r for r in self._pending if int(r["step"]) <= step]
        if not self.path.is_file():
            return 0
        rows = self._read()
        kept = [r for r in rows if int(float(r["step"])) <= step]
        if len(kept) != len(rows):
            self._write_all(kept)
        return len(rows) - len(kept)

    def _read(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file atomically, so a kill mid-write never leaves it half written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def read_csv_rows(path: os.PathLike) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats (empty cells become NaN), for analysis and tests."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) if v != "" else float("nan") for k, v in r.items()} for r in rows]


def _to_plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace tensor values by Python numbers with one device->host copy per device."""
    by_device: dict[torch.device, list[tuple[int, str]]] = defaultdict(list)
    for i, row in enumerate(rows):
        for key, value in row.items():
            if torch.is_tensor(value):
                by_device[value.device].append((i, key))
    plain = [dict(row) for row in rows]
    for slots in by_device.values():
        stacked = torch.stack([rows[i][k].detach().double().reshape(()) for i, k in slots])
        for (i, k), value in zip(slots, stacked.tolist(), strict=True):
            plain[i][k] = value
    return plain

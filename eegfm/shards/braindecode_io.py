"""A shard directory as a braindecode dataset: one `RawDataset` per recording."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from braindecode.datasets import BaseConcatDataset, RawDataset

from eegfm.shards.format import ManifestEntry
from eegfm.shards.mne_io import to_raw
from eegfm.shards.reader import ShardReader

DESCRIPTION_FIELDS = ("recording_id", "dataset", "subject", "session", "run", "task",
                      "acquisition")


def to_braindecode(
    shard_dir: os.PathLike | Sequence[os.PathLike],
    recording_ids: Sequence[str] | None = None,
    *,
    target_name: str | None = None,
) -> BaseConcatDataset:
    """Recordings of shard directories as a braindecode `BaseConcatDataset` of `RawDataset`s.

    Each recording is read whole by `to_raw` (volts, positions, annotations, bads), so select
    `recording_ids` (default: all, in manifest order) when the shards exceed memory. Its
    `description` holds `DESCRIPTION_FIELDS` and the BIDS participants.tsv columns under their
    own names (prefixed `participant_` where a name is taken); `target_name` names the
    description key braindecode gives as each window's target.
    """
    reader = ShardReader(shard_dir)
    ids = [e.recording_id for e in reader.entries] if recording_ids is None else recording_ids
    if not ids:
        raise ValueError(f"{shard_dir}: no recording selected (recording_ids is empty)")
    try:
        datasets = [
            RawDataset(to_raw(reader, rid), description(reader.entry(rid)), target_name=target_name)
            for rid in ids
        ]
    finally:
        reader.close()
    return BaseConcatDataset(datasets)


def description(entry: ManifestEntry) -> dict[str, Any]:
    """The braindecode description of one manifest entry (identity, BIDS entities, participant)."""
    out = {name: getattr(entry, name) for name in DESCRIPTION_FIELDS}
    for column, value in entry.participant.items():
        out[f"participant_{column}" if column in out else column] = value
    return out

"""The HDF5 shard contract: writer, manifest, lazy window reader and validation.

A shard directory holds `manifest.jsonl` (plus `manifest-NNNNN.jsonl` parts written by SLURM array
tasks), `failures.jsonl`, `prep_config.yaml` and `shard-*.h5` files. Each shard is written under a
temporary name and renamed when closed; its manifest lines are added (atomically) only after the
rename, so a crash never leaves a listed shard that is incomplete.

Each recording is one HDF5 group: `data` float32 (C, T) µV chunked (C, ~2 s), `coords` and
`ref_coords` float32 (C, 3) metres, `ch_names`, an `events` table and provenance attrs. The stored
`sha256` is taken over the data in sample-major order (T, C) as little-endian bytes of the stored
dtype, so it can be computed while a recording is streamed in time chunks; `metadata_sha256`
(format 2 on) covers positions, channel names, events and attrs.

Data back out: `to_raw` gives a recording as an `mne.io.RawArray`, `to_braindecode` a shard
directory as a braindecode dataset; both load on first use, so importing `eegfm.shards` (in
every data-loader worker) does not import MNE or braindecode.
"""

from __future__ import annotations

import importlib
from typing import Any

from eegfm.shards.format import (
    EVENT_DTYPE,
    FAILURES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    METADATA_CHECKSUM_VERSION,
    METADATA_SHA256,
    OLDEST_FORMAT_VERSION,
    PREP_CONFIG,
    ManifestEntry,
    Recording,
    Window,
    empty_events,
    events_frame,
    manifest_files,
    metadata_sha256,
    read_attrs,
    read_manifest,
    write_attrs,
    write_jsonl_atomic,
)
from eegfm.shards.reader import ShardDataError, ShardReader
from eegfm.shards.validate import (
    REQUIRED_ATTRS,
    ValidationReport,
    check_shards,
    data_sha256,
    validate_shards,
)
from eegfm.shards.writer import RecordingStream, ShardWriteError, ShardWriter

_LAZY = {"to_raw": "eegfm.shards.mne_io", "to_braindecode": "eegfm.shards.braindecode_io"}

__all__ = [
    "EVENT_DTYPE",
    "FAILURES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "METADATA_CHECKSUM_VERSION",
    "METADATA_SHA256",
    "OLDEST_FORMAT_VERSION",
    "PREP_CONFIG",
    "REQUIRED_ATTRS",
    "ManifestEntry",
    "Recording",
    "RecordingStream",
    "ShardDataError",
    "ShardReader",
    "ShardWriteError",
    "ShardWriter",
    "ValidationReport",
    "Window",
    "check_shards",
    "data_sha256",
    "empty_events",
    "events_frame",
    "manifest_files",
    "metadata_sha256",
    "read_attrs",
    "read_manifest",
    "to_braindecode",
    "to_raw",
    "validate_shards",
    "write_attrs",
    "write_jsonl_atomic",
]


def __getattr__(name: str) -> Any:
    """Resolve the names that import MNE or braindecode (`to_raw`, `to_braindecode`)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eegfm.shards' has no attribute {name!r}")

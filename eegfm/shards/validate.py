"""Validation of a shard directory: schema, listing and recomputed checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from eegfm.shards.format import (
    EVENT_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    PREP_CONFIG,
    ManifestEntry,
    read_attrs,
    read_manifest,
)

REQUIRED_ATTRS = (
    "dataset",
    "subject",
    "session",
    "run",
    "source",
    "source_sha256",
    "orig_sfreq",
    "montage_id",
    "reference",
    "highpass",
    "lowpass",
    "line_freq",
    "bad_channels",
    "sha256",
)


def data_sha256(dataset: h5py.Dataset, block_samples: int = 1 << 16) -> str:
    """Recompute the stored checksum of a `data` dataset (sample-major bytes)."""
    sha = hashlib.sha256()
    for start in range(0, dataset.shape[1], block_samples):
        block = dataset[:, start : start + block_samples]
        sha.update(
            np.ascontiguousarray(block.T)
            .astype(block.dtype.newbyteorder("<"), copy=False)
            .tobytes()
        )
    return sha.hexdigest()


def validate_shards(root: os.PathLike, progress: bool = False) -> list[str]:
    """Check schema and recompute every checksum; return the problems found (empty = valid)."""
    root = Path(root)
    try:
        entries = read_manifest(root)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    problems = []
    if not (root / PREP_CONFIG).is_file():
        problems.append(f"{root}: {PREP_CONFIG} is missing")
    by_shard: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).append(entry)
    seen = set()
    for entry in entries:
        if entry.recording_id in seen:
            problems.append(f"recording {entry.recording_id} is listed twice")
        seen.add(entry.recording_id)
    listed = set(by_shard)
    for path in sorted(root.glob("*.h5")):
        if path.name not in listed:
            problems.append(
                f"{path.name}: shard not listed in any manifest (interrupted prep? "
                "re-run `eegfm prep` with the same --out to finish)"
            )
    shards = sorted(by_shard.items())
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, desc="validate", unit="shard")
    for shard, shard_entries in shards:
        problems += _validate_shard(root / shard, shard_entries)
    return problems


def _validate_shard(path: Path, entries: list[ManifestEntry]) -> list[str]:
    if not path.is_file():
        return [f"{path.name}: listed in the manifest but missing"]
    problems = []
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        return [f"{path.name}: cannot open ({error})"]
    with handle:
        try:
            attrs = dict(handle.attrs)
        except Exception as error:  # damaged file metadata: report it, validate the other shards
            return [f"{path.name}: unreadable file attributes ({type(error).__name__}: {error})"]
        if attrs.get("format") != FORMAT or int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            problems.append(f"{path.name}: not an {FORMAT} v{FORMAT_VERSION} file")
        if attrs.get("units") != "uV":
            problems.append(f"{path.name}: units attr is {attrs.get('units')!r}, expected 'uV'")
        for entry in entries:
            try:
                problems += [
                    f"{path.name}: recording {entry.recording_id}: {p}"
                    for p in _validate_recording(handle, entry, attrs)
                ]
            except Exception as error:  # any HDF5 read error means damage; report, keep going
                problems.append(
                    f"{path.name}: recording {entry.recording_id}: unreadable "
                    f"({type(error).__name__}: {error})"
                )
    return problems


def _validate_recording(handle: h5py.File, entry: ManifestEntry, file_attrs: dict) -> list[str]:
    if entry.recording_id not in handle:
        return ["group missing"]
    group = handle[entry.recording_id]
    problems = []
    shape = (entry.n_channels, entry.n_samples)
    if group["data"].shape != shape or group["data"].dtype not in (np.float32, np.float16):
        problems.append(f"data is {group['data'].shape} {group['data'].dtype}, expected {shape}")
    for name in ("coords", "ref_coords"):
        if group[name].shape != (entry.n_channels, 3):
            problems.append(f"{name} has shape {group[name].shape}")
    if not np.isfinite(group["coords"][()]).all():
        problems.append("coords are not all finite")
    if len(group["ch_names"]) != entry.n_channels:
        problems.append("ch_names length differs from n_channels")
    if group["events"].dtype.names != EVENT_DTYPE.names:
        problems.append(f"events columns are {group['events'].dtype.names}")
    attrs = read_attrs(group)
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        problems.append(f"attrs missing: {missing}")
    if float(file_attrs.get("sfreq", -1)) != entry.sfreq:
        problems.append(f"manifest sfreq {entry.sfreq} differs from shard sfreq")
    if attrs.get("sha256") != entry.sha256:
        problems.append("sha256 in the manifest differs from the one stored in the shard")
    if not problems:
        computed = data_sha256(group["data"])
        if computed != entry.sha256:
            problems.append(
                f"data checksum mismatch (stored {entry.sha256[:12]}, "
                f"computed {computed[:12]}): the data is damaged"
            )
    return problems

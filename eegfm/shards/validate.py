"""Validation of a shard directory: schema, listing and recomputed checksums."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from eegfm.console import progress as progress_bar
from eegfm.shards.format import (
    EVENT_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    METADATA_CHECKSUM_VERSION,
    METADATA_SHA256,
    OLDEST_FORMAT_VERSION,
    PREP_CONFIG,
    ManifestEntry,
    metadata_sha256,
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


def checks_metadata(file_attrs: Mapping) -> bool:
    """Whether a shard's recordings carry a metadata checksum to check (format 2 on).

    A file of unknown format is checked too: nothing vouches for its metadata.
    """
    version = _format_version(file_attrs)
    return version is None or version >= METADATA_CHECKSUM_VERSION


def checksum_problems(group: h5py.Group, entry: ManifestEntry, check_metadata: bool) -> list[str]:
    """Recompute a recording's checksums (metadata if `check_metadata`, then data); mismatches.

    The one check behind `eegfm validate` and the loader's `data.verify`. Expects a recording
    of the manifest's shape (`_validate_recording` checks that first).
    """
    problems = []
    if check_metadata:
        # this one attr alone, not `read_attrs`: metadata_sha256 reads them all again, and
        # HDF5 attr reads are most of the check's cost
        stored = group.attrs.get(METADATA_SHA256)
        stored = stored.decode() if isinstance(stored, bytes) else stored
        if stored is None:
            problems.append(f"metadata checksum missing (no {METADATA_SHA256} attr)")
        else:
            computed = metadata_sha256(group)
            if computed != stored:
                problems.append(
                    f"metadata checksum mismatch (stored {str(stored)[:12]}, computed "
                    f"{computed[:12]}): positions, channel names, events or attrs were changed"
                )
    computed = data_sha256(group["data"])
    if computed != entry.sha256:
        problems.append(
            f"data checksum mismatch (stored {entry.sha256[:12]}, "
            f"computed {computed[:12]}): the data is damaged"
        )
    return problems


@dataclass
class ValidationReport:
    """What `check_shards` found: damage (`problems`) and what is intact but worth knowing."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def validate_shards(root: os.PathLike, progress: bool = False) -> list[str]:
    """Check schema and recompute every checksum; return the problems found (empty = valid)."""
    return check_shards(root, progress).problems


def check_shards(root: os.PathLike, progress: bool = False) -> ValidationReport:
    """`validate_shards` with its notes (such as shards of a format without metadata checksum)."""
    root = Path(root)
    try:
        entries = read_manifest(root)
    except (FileNotFoundError, ValueError) as error:
        return ValidationReport([str(error)])
    report = ValidationReport()
    problems = report.problems
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
        shards = progress_bar(shards, desc="validate", unit="shard")
    unchecked: dict[int, list[str]] = {}  # format version without metadata checksum -> shards
    for shard, shard_entries in shards:
        shard_problems, version = _validate_shard(root / shard, shard_entries)
        problems += shard_problems
        if version is not None and version < METADATA_CHECKSUM_VERSION:
            unchecked.setdefault(version, []).append(shard)
    for version, names in sorted(unchecked.items()):
        named = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        report.notes.append(
            f"format {version}: metadata not checksummed in {len(names)} shard(s) ({named}): "
            "positions, channel names, events and attrs are not checked, the data is; "
            f"`eegfm prep` into a new --out writes format {FORMAT_VERSION}"
        )
    return report


def _format_version(attrs: Mapping) -> int | None:
    """The shard's format version if it is an eegfm shard this code reads, else None."""
    try:
        version = int(attrs.get("format_version", -1))
    except (TypeError, ValueError):  # damaged attr: reported as not an eegfm shard
        return None
    if attrs.get("format") != FORMAT or not OLDEST_FORMAT_VERSION <= version <= FORMAT_VERSION:
        return None
    return version


def _validate_shard(path: Path, entries: list[ManifestEntry]) -> tuple[list[str], int | None]:
    """Problems of one shard file, and its format version (None if unknown)."""
    if not path.is_file():
        return [f"{path.name}: listed in the manifest but missing"], None
    problems = []
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        return [f"{path.name}: cannot open ({error})"], None
    with handle:
        try:
            attrs = dict(handle.attrs)
        except Exception as error:  # damaged file metadata: report it, validate the other shards
            return [
                f"{path.name}: unreadable file attributes ({type(error).__name__}: {error})"
            ], None
        version = _format_version(attrs)
        if version is None:
            problems.append(
                f"{path.name}: not an {FORMAT} file of version {OLDEST_FORMAT_VERSION} to "
                f"{FORMAT_VERSION} (format {attrs.get('format')!r}, "
                f"format_version {attrs.get('format_version')!r})"
            )
        if attrs.get("units") != "uV":
            problems.append(f"{path.name}: units attr is {attrs.get('units')!r}, expected 'uV'")
        check_metadata = checks_metadata(attrs)
        for entry in entries:
            try:
                problems += [
                    f"{path.name}: recording {entry.recording_id}: {p}"
                    for p in _validate_recording(handle, entry, attrs, check_metadata)
                ]
            except Exception as error:  # any HDF5 read error means damage; report, keep going
                problems.append(
                    f"{path.name}: recording {entry.recording_id}: unreadable "
                    f"({type(error).__name__}: {error})"
                )
    return problems, version


def _validate_recording(
    handle: h5py.File, entry: ManifestEntry, file_attrs: dict, check_metadata: bool
) -> list[str]:
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
    if problems:  # checksums only over a recording of the right shape
        return problems
    return checksum_problems(group, entry, check_metadata)

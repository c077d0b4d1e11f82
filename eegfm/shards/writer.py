"""Writing shards: one recording at a time, streamed in time blocks, under a temporary name."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from eegfm import __version__
from eegfm.shards.format import (
    EVENT_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    METADATA_SHA256,
    ManifestEntry,
    Recording,
    empty_events,
    fsync_dir,
    metadata_sha256,
    write_attrs,
    write_jsonl_atomic,
)


class ShardWriteError(OSError):
    """Writing a shard or its manifest failed (a full disk, an I/O error); the shard is dropped.

    A failure of the output, not of the recording being written: every later one would fail too.
    """


class _GuardedFile(io.RawIOBase):
    """The shard file as HDF5 writes it (h5py's `fileobj` driver), proof against a full disk.

    HDF5 cannot close a file once one of its writes failed (h5py then segfaults), so the first
    failed write is kept in `error` and HDF5 is told it succeeded: later bytes are held in
    memory (and read back from there), and the writer raises `error` itself, from Python, and
    drops the file.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._position = self._size = 0
        self._held: list[tuple[int, bytes]] = []  # (offset, bytes) not written, in write order
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n, start = len(view), self._position
        data = os.pread(self._fd, n, start)
        view[: len(data)] = data
        view[len(data) :] = bytes(n - len(data))  # past the end (or a hole): zeros
        for offset, held in self._held:
            lo, hi = max(offset, start), min(offset + len(held), start + n)
            if lo < hi:
                view[lo - start : hi - start] = held[lo - offset : hi - offset]
        self._position += n
        return n

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], self._position + done)
            except OSError as error:
                self.error = OSError(error.errno, error.strerror, str(self.path))
        if done < len(view):
            self._held.append((self._position + done, bytes(view[done:])))
        self._position += len(view)
        self._size = max(self._size, self._position)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as error:
                self.error = OSError(error.errno, error.strerror, str(self.path))
        self._size = size
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _lists(manifest: Path, shard: str) -> bool:
    """Whether a manifest file names a shard (after a failed rewrite: did the rename happen?)."""
    if not manifest.exists():
        return False
    return any(
        json.loads(line).get("shard") == shard
        for line in manifest.read_text(encoding="utf-8").splitlines()
        if line.strip()
    )


class RecordingStream:
    """Writes one recording into an open shard, time chunk by time chunk, hashing as it goes."""

    def __init__(
        self,
        writer: ShardWriter,
        recording_id: str,
        *,
        ch_names: Sequence[str],
        coords: np.ndarray,
        ref_coords: np.ndarray,
        n_samples: int,
    ):
        n_channels = len(ch_names)
        coords = np.asarray(coords, dtype=np.float32)
        ref_coords = np.asarray(ref_coords, dtype=np.float32)
        if "/" in recording_id or not recording_id:
            raise ValueError(f"recording_id {recording_id!r} must be non-empty and contain no '/'")
        if coords.shape != (n_channels, 3) or ref_coords.shape != (n_channels, 3):
            raise ValueError(f"{recording_id}: coords and ref_coords must be ({n_channels}, 3)")
        if not np.isfinite(coords).all():
            raise ValueError(f"{recording_id}: coords must be finite (drop unlocated channels)")
        if n_channels == 0 or n_samples <= 0:
            raise ValueError(f"{recording_id}: empty recording ({n_channels} x {n_samples})")
        self.writer, self.recording_id, self.n_samples = writer, recording_id, int(n_samples)
        h5 = writer._shard_file()
        if recording_id in h5:
            raise ValueError(f"recording {recording_id} is already in {writer._tmp_path.name}")
        self._group = h5.create_group(recording_id)
        chunk = max(1, min(self.n_samples, round(writer.chunk_s * writer.sfreq)))
        self._data = self._group.create_dataset(
            "data",
            shape=(n_channels, self.n_samples),
            dtype=writer.dtype,
            chunks=(n_channels, chunk),
        )
        self._group["coords"] = coords
        self._group["ref_coords"] = ref_coords
        self._group["ch_names"] = np.array(list(ch_names), dtype=h5py.string_dtype())
        self._position = 0
        self._sha = hashlib.sha256()

    def write(self, chunk: np.ndarray) -> None:
        """Append the next (C, t) block of µV data."""
        block = np.asarray(chunk)
        stop = self._position + block.shape[1]
        if block.ndim != 2 or block.shape[0] != self._data.shape[0] or stop > self.n_samples:
            raise ValueError(
                f"{self.recording_id}: block {block.shape} does not fit "
                f"{self._data.shape} at sample {self._position}"
            )
        if not np.isfinite(block).all():
            raise ValueError(f"{self.recording_id}: refusing to store NaN/Inf values")
        stored = block.astype(self.writer.dtype, copy=False)
        self._data[:, self._position : stop] = stored
        self.writer._check()
        self._sha.update(
            np.ascontiguousarray(stored.T).astype(stored.dtype.newbyteorder("<"), copy=False)
        )
        self._position = stop

    def abort(self) -> None:
        """Remove the unfinished recording from the shard (gone already if the shard was)."""
        h5 = self.writer._h5
        if h5 is not None and self.recording_id in h5:
            del h5[self.recording_id]

    def finish(self, events: pd.DataFrame | None = None, attrs: dict | None = None) -> None:
        """Store events and attrs and register the manifest entry with the writer."""
        if self._position != self.n_samples:
            raise ValueError(
                f"{self.recording_id}: wrote {self._position} of {self.n_samples} samples"
            )
        events = empty_events() if events is None else events
        table = np.empty(len(events), dtype=EVENT_DTYPE)
        for column in ("onset", "duration", "code"):
            table[column] = events[column].to_numpy(dtype=np.int64)
        table["label"] = [str(x) for x in events["label"]]
        self._group.create_dataset("events", data=table, dtype=EVENT_DTYPE)
        attrs = dict(attrs or {})
        attrs["sha256"] = self._sha.hexdigest()
        attrs.pop(METADATA_SHA256, None)  # attrs copied from another shard: computed anew below
        write_attrs(self._group, attrs)
        # taken over what the file now holds, so that validate recomputes the same bytes
        self._group.attrs[METADATA_SHA256] = metadata_sha256(self._group)
        self.writer._check()
        self.writer._add_entry(self._entry(attrs, events))

    def _entry(self, attrs: dict, events: pd.DataFrame) -> ManifestEntry:
        return ManifestEntry(
            recording_id=self.recording_id,
            shard=self.writer._final_path.name,
            dataset=str(attrs.get("dataset", "")),
            subject=attrs.get("subject"),
            session=attrs.get("session"),
            run=attrs.get("run"),
            n_channels=int(self._data.shape[0]),
            n_samples=self.n_samples,
            sfreq=float(self.writer.sfreq),
            montage_id=str(attrs.get("montage_id", "")),
            has_events=len(events) > 0,
            labels=sorted({str(x) for x in events["label"]}),
            sha256=attrs["sha256"],
            source=str(attrs.get("source", "")),
            source_sha256=str(attrs.get("source_sha256", "")),
            config_hash=self.writer.config_hash,
            fingerprint=str(attrs.get("fingerprint", "")),
            localization=dict(attrs.get("localization") or {}),
            bad_channels=list(attrs.get("bad_channels") or []),
            task=attrs.get("task"),
            acquisition=attrs.get("acquisition"),
            participant=dict(attrs.get("participant") or {}),
        )


class ShardWriter:
    """Writes recordings into `PREFIX-NNNNN.h5` shards closed once they reach `max_shard_bytes`.

    Each shard is written as `*.h5.tmp` and renamed on close; the manifest (`manifest_name`,
    None for none) is then replaced atomically with its lines added. Use as a context manager.
    """

    def __init__(
        self,
        out_dir: os.PathLike,
        *,
        sfreq: float,
        shard_prefix: str = "shard",
        max_shard_bytes: float = 1e9,
        manifest_name: str | None = MANIFEST,
        config_hash: str = "",
        dtype: str = "float32",
        chunk_s: float = 2.0,
        created_by: str | None = None,
        durable: bool = True,
    ):
        if dtype not in ("float32", "float16"):
            raise ValueError(f"shard dtype must be float32 or float16, got {dtype!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sfreq, self.shard_prefix = float(sfreq), shard_prefix
        self.max_shard_bytes = max_shard_bytes
        self.manifest_name, self.config_hash = manifest_name, config_hash
        self.dtype, self.chunk_s = np.dtype(dtype), chunk_s
        self.created_by = created_by or f"eegfm {__version__}"
        self.durable = durable  # fsync shards and manifests (off for scratch files)
        pattern = re.compile(rf"^{re.escape(shard_prefix)}-(\d+)\.h5$")
        taken = [int(m.group(1)) for p in self.out_dir.iterdir() if (m := pattern.match(p.name))]
        self._next_index = max(taken, default=-1) + 1
        self._h5: h5py.File | None = None
        self._file: _GuardedFile | None = None
        self._pending: list[ManifestEntry] = []
        self._bytes = 0
        self.entries: list[ManifestEntry] = []
        self.last_entry: ManifestEntry | None = None  # the recording written last

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self.abort()

    @property
    def _final_path(self) -> Path:
        return self.out_dir / f"{self.shard_prefix}-{self._next_index:05d}.h5"

    @property
    def _tmp_path(self) -> Path:
        return self._final_path.with_name(self._final_path.name + ".tmp")

    def _shard_file(self) -> h5py.File:
        if self._h5 is None:
            self._file = _GuardedFile(self._tmp_path)
            self._h5 = h5py.File(self._file, "w", rdcc_nbytes=64 << 20)
            self._h5.attrs.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                sfreq=self.sfreq,
                units="uV",
                created_by=self.created_by,
                config_hash=self.config_hash,
            )
        return self._h5

    def _add_entry(self, entry: ManifestEntry) -> None:
        # A shard closes once it holds max_shard_bytes: the decision depends only on recordings
        # that were written in full, so failed ones never move a shard boundary.
        self._pending.append(entry)
        self.last_entry = entry
        self._bytes += entry.n_channels * entry.n_samples * self.dtype.itemsize
        if self._bytes >= self.max_shard_bytes:
            self._close_shard()

    def open_recording(
        self,
        recording_id: str,
        *,
        ch_names: Sequence[str],
        coords: np.ndarray,
        ref_coords: np.ndarray,
        n_samples: int,
    ) -> RecordingStream:
        """Start streaming a recording into the current shard; call `finish` when done."""
        return RecordingStream(
            self,
            recording_id,
            ch_names=ch_names,
            coords=coords,
            ref_coords=ref_coords,
            n_samples=n_samples,
        )

    def write(self, recording: Recording) -> None:
        """Write one in-memory recording."""
        stream = self.open_recording(
            recording.recording_id,
            ch_names=recording.ch_names,
            coords=recording.coords,
            ref_coords=recording.ref_coords,
            n_samples=recording.data.shape[1],
        )
        try:
            stream.write(recording.data)
            stream.finish(recording.events, recording.attrs)
        except Exception:
            stream.abort()
            raise

    def write_staged(self, staged: ManifestEntry) -> None:
        """Copy a recording from a closed staging shard (one written by another process)."""
        source = Path(staged.root) / staged.shard
        h5 = self._shard_file()
        with h5py.File(source, "r") as src:
            stored_dtype = src[staged.recording_id]["data"].dtype
            if float(src.attrs["sfreq"]) != self.sfreq or stored_dtype != self.dtype:
                raise ValueError(
                    f"{source}: staged recording has another sfreq or dtype "
                    f"than shard {self._final_path.name}"
                )
            src.copy(src[staged.recording_id], h5, name=staged.recording_id)
        self._check()
        self._add_entry(
            dataclasses.replace(
                staged, shard=self._final_path.name, root="", config_hash=self.config_hash
            )
        )

    def _check(self) -> None:
        """Raise a failed write of the current shard (a full disk), dropping the shard."""
        if self._file is not None and self._file.error is not None:
            error = self._file.error
            self.abort()
            raise ShardWriteError(error.errno, error.strerror, error.filename)

    def _close_shard(self) -> None:
        if self._h5 is None:
            return
        try:
            self._h5.flush()
            self._check()
            if self.durable:
                os.fsync(self._file.fileno())
            self._h5.close()
            self._h5 = None
            self._check()
            self._file.close()
            self._file = None
            os.replace(self._tmp_path, self._final_path)
            if self.durable:
                fsync_dir(self.out_dir)
        except ShardWriteError:
            raise
        except OSError as error:
            self.abort()
            self._final_path.unlink(missing_ok=True)  # renamed, but listed nowhere
            raise ShardWriteError(
                error.errno, error.strerror, error.filename or str(self._tmp_path)
            ) from error
        if self.manifest_name is not None:
            self._list_shard(self.out_dir / self.manifest_name)
        root = str(self.out_dir)
        self.entries += [dataclasses.replace(e, root=root) for e in self._pending]
        self._pending, self._bytes = [], 0
        self._next_index += 1

    def _list_shard(self, path: Path) -> None:
        """Add the closed shard's recordings to the manifest (rewritten atomically)."""
        old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        try:
            write_jsonl_atomic(path, [*old, *(e.to_json() for e in self._pending)])
        except BaseException as error:
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            if not _lists(path, self._final_path.name):  # listed nowhere: drop, as a rerun
                self._final_path.unlink(missing_ok=True)
            else:  # listed (the directory's fsync failed): it stays, the next shard moves on
                self._next_index += 1
            self._pending, self._bytes = [], 0
            if isinstance(error, OSError):
                raise ShardWriteError(
                    error.errno, error.strerror, error.filename or str(path)
                ) from error
            raise

    def close(self) -> list[ManifestEntry]:
        """Close (rename, list) the current shard; return every entry this writer wrote."""
        self._close_shard()
        return list(self.entries)

    def abort(self) -> None:
        """Drop the current unfinished shard (nothing of it is listed)."""
        if self._h5 is not None:
            self._h5.close()  # never fails on a full disk: the guarded file holds the bytes
            self._h5 = None
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp_path.unlink(missing_ok=True)
        self._pending, self._bytes = [], 0

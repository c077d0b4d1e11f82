"""`run_prep`: convert sources into a shard directory with a process pool, resumably.

Workers convert one source item each into a private staging file; the parent takes the results
in sorted source order, drops duplicates (same raw-sample fingerprint) and copies each recording
into the current shard. So the output is the same for any number of workers, and a run killed at
any point and started again ends with the same manifest and data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import multiprocessing
import os
import re
import select
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml

from eegfm.console import progress as progress_bar
from eegfm.prep.config import (
    PrepConfig,
    PrepError,
    config_hash,
    load_prep_config,
    write_prep_config,
)
from eegfm.prep.pipeline import write_raw
from eegfm.prep.readers import load_item, raw_fingerprint
from eegfm.prep.sources import SourceItem, expand_sources
from eegfm.shards import (
    PREP_CONFIG,
    ManifestEntry,
    ShardWriter,
    manifest_files,
    read_manifest,
    write_jsonl_atomic,
)
from eegfm.shards.writer import ShardWriteError


class OutputWriteError(PrepError):
    """The output directory cannot be written (a full disk, a quota, an I/O error): a data
    error, not a configuration one; the run stops, as every later recording would fail too."""

    exit_code = 1


def _output_failed(error: BaseException) -> bool:
    """Whether an error is the output's (stop the run), not one recording's (record, go on)."""
    if isinstance(error, ShardWriteError):
        return True
    # a full disk also fails the scratch files written next to the output
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class PrepSummary:
    """What one `run_prep` call did."""

    out_dir: Path
    converted: list[str] = field(default_factory=list)  # recording ids written by this run
    skipped: list[str] = field(default_factory=list)  # already in the directory
    failures: list[dict] = field(default_factory=list)  # {source, reason}
    duplicates: list[dict] = field(default_factory=list)  # {source, duplicate_of, reason}
    seconds: float = 0.0
    eeg_seconds: float = 0.0  # duration of the recordings converted by this run
    strict: bool = False  # the run's --strict

    def exit_code(self, strict: bool | None = None) -> int:
        """0 unless everything failed, or anything failed under --strict."""
        strict = self.strict if strict is None else strict
        if self.failures and (strict or not (self.converted or self.skipped or self.duplicates)):
            return 1
        return 0


@dataclass(frozen=True)
class _Layout:
    """File names of one partition (SLURM array task) inside the output directory."""

    manifest: str
    failures: str
    shard_prefix: str
    staging: str

    @classmethod
    def of(cls, shard_index: int, num_shards: int) -> _Layout:
        """Names for array task `shard_index` of `num_shards` (plain names for a single run)."""
        if num_shards == 1:
            return cls("manifest.jsonl", "failures.jsonl", "shard", ".staging")
        tag = f"{shard_index:05d}"
        return cls(
            f"manifest-{tag}.jsonl", f"failures-{tag}.jsonl", f"shard-{tag}", f".staging-{tag}"
        )


# ------------------------------------------------------------------------------- worker side
_WORKER: dict = {}


def _init_worker(
    config: PrepConfig,
    staging: str,
    done: dict,
    fingerprints: dict,
    writer: ShardWriter | None = None,
    main_pid: int | None = None,
) -> None:
    import mne

    mne.set_log_level("ERROR")
    if main_pid is not None:
        _exit_with(main_pid)
    _WORKER.update(
        config=config, staging=Path(staging), done=done, fingerprints=fingerprints, writer=writer
    )


def _exit_with(main_pid: int) -> None:
    """End this pool worker when the main process is gone, however it ended (`kill -9`).

    A worker's parent is the forkserver, not the main process, so PR_SET_PDEATHSIG would not
    fire; and the forkserver and resource tracker live as long as any worker holds their pipes,
    so every process of the pool would otherwise outlive the run.
    """
    try:
        watched = os.pidfd_open(main_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux, or a kernel before 5.3): poll
        watched = None

    def watch() -> None:
        if watched is not None:
            select.select([watched], [], [])  # readable once the process has exited
        else:
            while _alive(main_pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="eegfm-prep-main-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user (the pid was reused)
        pass
    return True


def _convert_item(job: tuple[int, SourceItem]) -> list[dict]:
    """Convert one source item; one outcome dict per recording.

    In a pool worker the recordings go to a private staging shard that the parent copies in
    order; with one worker (`_WORKER['writer']` set) they are written straight into the output
    shard, the fingerprints then being the parent's own, up to date.
    """
    position, item = job
    config, staging = _WORKER["config"], _WORKER["staging"]
    try:
        recordings = list(load_item(item, config))
    except Exception as error:
        if _output_failed(error):
            raise
        return [_failure(item.location, error)]
    direct = _WORKER["writer"]
    writer = direct or ShardWriter(
        staging,
        sfreq=config.sfreq,
        shard_prefix=f"item-{position:07d}",
        max_shard_bytes=float("inf"),
        manifest_name=None,
        config_hash=config_hash(config),
        dtype=config.shard_dtype,
        chunk_s=config.shard_chunk_s,
        durable=False,
    )
    try:
        outcomes = _write_recordings(recordings, item, writer, direct is not None, staging)
    except BaseException:
        if direct is None:
            writer.abort()
        raise
    if direct is None:
        entries = {e.recording_id: e for e in writer.close()}
        for outcome in outcomes:
            if outcome["status"] == "ok":
                outcome["entry"] = entries[outcome["recording_id"]]
    return outcomes


def _write_recordings(
    recordings: list, item: SourceItem, writer: ShardWriter, direct: bool, staging: Path
) -> list[dict]:
    """Skip, flag as duplicate or write each recording of an item; one outcome dict each."""

    config = _WORKER["config"]
    outcomes = []
    for loaded in recordings:
        done = _WORKER["done"].get(loaded.recording_id)
        if done is not None:
            if done == loaded.attrs["source_sha256"]:
                outcomes.append({"status": "skipped", "recording_id": loaded.recording_id})
            else:
                outcomes.append(
                    _failure(
                        loaded.attrs["source"],
                        PrepError(
                            f"{loaded.recording_id} is already in this directory from a different "
                            "version of the source file; write to a new --out"
                        ),
                    )
                )
            continue
        try:
            fingerprint = raw_fingerprint(loaded.raw)
            if fingerprint in _WORKER["fingerprints"]:
                outcomes.append(_duplicate(loaded, *_WORKER["fingerprints"][fingerprint]))
                continue
            attrs = {**loaded.attrs, "fingerprint": fingerprint}
            report = write_raw(
                writer,
                loaded.raw,
                config,
                recording_id=loaded.recording_id,
                attrs=attrs,
                montage=loaded.montage,
                event_id=loaded.event_id,
                scratch_dir=staging,
            )
            outcomes.append(
                {
                    "status": "ok",
                    "recording_id": loaded.recording_id,
                    "report": report,
                    "fingerprint": fingerprint,
                    "entry": writer.last_entry,
                    "direct": direct,
                }
            )
        except Exception as error:
            if _output_failed(error):  # every later recording would fail the same way
                raise
            outcomes.append(
                _failure(
                    loaded.attrs.get("source", item.location),
                    error,
                    recording_id=loaded.recording_id,
                )
            )
    return outcomes


def _failure(source: str, error: Exception, recording_id: str | None = None) -> dict:
    reason = str(error) if isinstance(error, PrepError) else f"{type(error).__name__}: {error}"
    record = {"status": "failed", "source": source, "reason": reason}
    if recording_id:
        record["recording_id"] = recording_id
    return record


def _duplicate(loaded, recording_id: str, source: str) -> dict:
    return {
        "status": "duplicate",
        "source": loaded.attrs["source"],
        "recording_id": loaded.recording_id,
        "duplicate_of": recording_id,
        "reason": f"duplicate: same samples as {recording_id} ({source}); not stored again",
    }


# ------------------------------------------------------------------------------- parent side
def partition(items: Sequence[SourceItem], shard_index: int, num_shards: int) -> list[SourceItem]:
    """The items of one SLURM array task: every num_shards-th of the sorted list."""
    if not 0 <= shard_index < num_shards:
        raise PrepError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    return [item for i, item in enumerate(items) if i % num_shards == shard_index]


def _prepare_out_dir(out_dir: Path, config: PrepConfig, layout: _Layout) -> list[ManifestEntry]:
    """Check the config, clear what an interrupted run left; return the entries already done."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = config_hash(config)
    config_path = out_dir / PREP_CONFIG
    if config_path.exists():
        existing = (yaml.safe_load(config_path.read_text()) or {}).get("config_hash")
        if existing != wanted:
            raise PrepError(
                f"{out_dir} holds shards made with config hash {existing}, this run's "
                f"is {wanted}: use a new --out, or the config in {config_path}"
            )
    else:
        tmp = config_path.with_name(f"{PREP_CONFIG}.{os.getpid()}.tmp")  # array tasks race here
        write_prep_config(config, tmp)
        os.replace(tmp, config_path)
    entries = read_manifest(out_dir) if manifest_files(out_dir) else []
    listed = {e.shard for e in entries}
    pattern = re.compile(rf"^{re.escape(layout.shard_prefix)}-\d+\.h5(\.tmp)?$")
    for path in out_dir.iterdir():  # unfinished shards, or renamed but not yet listed
        if pattern.match(path.name) and path.name not in listed:
            path.unlink()
    shutil.rmtree(out_dir / layout.staging, ignore_errors=True)
    return entries


def _outcomes(
    jobs: list[tuple[int, SourceItem]], workers: int, init_args: tuple, writer: ShardWriter
) -> Iterator[list[dict]]:
    if workers <= 1:
        _init_worker(*init_args, writer=writer)
        yield from map(_convert_item, jobs)
        return
    with ProcessPoolExecutor(
        min(workers, len(jobs)),
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(*init_args, None, os.getpid()),
    ) as pool:
        yield from pool.map(_convert_item, jobs)


def _pool_context():
    """forkserver (workers fork from a clean process that imported MNE and SciPy once), else spawn.

    Plain fork would copy the parent's open HDF5 writer and threads into every worker.
    """
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["eegfm.prep.pipeline", "eegfm.prep.readers", "mne"])
    return context


def run_prep(
    sources: Sequence[str],
    out_dir: os.PathLike,
    config: PrepConfig | None = None,
    *,
    workers: int = 1,
    shard_index: int = 0,
    num_shards: int = 1,
    strict: bool = False,
    progress: bool = True,
) -> PrepSummary:
    """Convert every recording of `sources` into the shard directory `out_dir`."""
    started = time.perf_counter()
    config = config if isinstance(config, PrepConfig) else load_prep_config(config)
    if workers < 1:
        raise PrepError(f"--workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    layout = _Layout.of(shard_index, num_shards)
    items = partition(expand_sources(sources, config), shard_index, num_shards)
    if not items:
        raise PrepError(
            f"no recordings found in {', '.join(map(str, sources))} (shard "
            f"{shard_index} of {num_shards})"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _output_lock(out_dir, layout, num_shards):
            try:
                existing = _prepare_out_dir(out_dir, config, layout)
                summary = _convert_all(items, out_dir, config, layout, existing, workers, progress)
            except BaseException:
                _remove_leftovers(out_dir, layout)
                raise
    except OSError as error:
        if not _output_failed(error):
            raise
        raise OutputWriteError(
            f"{out_dir}: {os.strerror(error.errno).lower()}{_writing(error, out_dir)}; the "
            "shards listed so far are kept and valid: free space (or use another --out) and run "
            "the same command again to resume"
        ) from None
    summary.seconds, summary.strict = time.perf_counter() - started, strict
    return summary


def _writing(error: OSError, out_dir: Path) -> str:
    """' while writing FILE' (relative to the output directory when inside it), or ''."""
    if not error.filename:
        return ""
    path = Path(error.filename)
    return f" while writing {path.relative_to(out_dir) if path.is_relative_to(out_dir) else path}"


def _remove_leftovers(out_dir: Path, layout: _Layout) -> None:
    """Remove the temporary files of this partition that a stopped run leaves behind."""
    shutil.rmtree(out_dir / layout.staging, ignore_errors=True)
    names = {f"{layout.manifest}.tmp", f"{layout.failures}.tmp", f"{PREP_CONFIG}.{os.getpid()}.tmp"}
    pattern = re.compile(rf"^{re.escape(layout.shard_prefix)}-\d+\.h5\.tmp$")
    for path in out_dir.iterdir():
        if path.name in names or pattern.match(path.name):
            path.unlink(missing_ok=True)


def _convert_all(
    items: list[SourceItem],
    out_dir: Path,
    config: PrepConfig,
    layout: _Layout,
    existing: list[ManifestEntry],
    workers: int,
    progress: bool,
) -> PrepSummary:
    """Convert the items in order into the partition's shards; record failures as they come."""
    done = {e.recording_id: e.source_sha256 for e in existing}
    fingerprints = {e.fingerprint: (e.recording_id, e.source) for e in existing if e.fingerprint}
    staging = out_dir / layout.staging
    staging.mkdir()
    summary = PrepSummary(out_dir)
    failures_path = out_dir / layout.failures
    writer = ShardWriter(
        out_dir,
        sfreq=config.sfreq,
        shard_prefix=layout.shard_prefix,
        max_shard_bytes=config.shard_max_bytes,
        manifest_name=layout.manifest,
        config_hash=config_hash(config),
        dtype=config.shard_dtype,
        chunk_s=config.shard_chunk_s,
    )
    bar = progress_bar(total=len(items), desc="prep", unit="file") if progress else None
    jobs = list(enumerate(items))
    _write_failures(failures_path, summary)  # this partition's old failures are retried
    init_args = (config, str(staging), done, fingerprints)
    try:
        # closing(): on an error the pool is shut down before its staging folder is removed
        with contextlib.closing(_outcomes(jobs, workers, init_args, writer)) as results:
            for outcomes in results:
                _take(outcomes, writer, summary, fingerprints, failures_path)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        ok=len(summary.converted),
                        failed=len(summary.failures),
                        skipped=len(summary.skipped),
                    )
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _take(
    outcomes: list[dict],
    writer: ShardWriter,
    summary: PrepSummary,
    fingerprints: dict,
    failures_path: Path,
) -> None:
    """Record one item's outcomes (copying staged recordings into the shard), in order."""
    reported = len(summary.failures) + len(summary.duplicates)
    for outcome in outcomes:
        _record(outcome, writer, summary, fingerprints)
    for outcome in outcomes:
        if "entry" in outcome and not outcome["direct"]:  # staged copy no longer needed
            (Path(outcome["entry"].root) / outcome["entry"].shard).unlink(missing_ok=True)
    if len(summary.failures) + len(summary.duplicates) != reported:
        _write_failures(failures_path, summary)


@contextlib.contextmanager
def _output_lock(out_dir: Path, layout: _Layout, num_shards: int) -> Iterator[None]:
    """One partition layout per output directory at a time, one writer per partition.

    Writers of different layouts would each miss the recordings the other has not listed yet
    and list them twice; array tasks of one --num-shards never share a recording, so they may
    write together. `.lock` records the layout and every writer holds it shared; a writer joins
    under the exclusive `.lock-join` so that reading the layout and taking `.lock` is one step.
    Then `.lock-<partition>` is held exclusively.
    """
    wanted = f"num_shards={num_shards}\n"
    with contextlib.ExitStack() as held:
        directory = held.enter_context(open(out_dir / ".lock", "a+", encoding="utf-8"))
        with open(out_dir / ".lock-join", "w") as join:
            fcntl.flock(join, fcntl.LOCK_EX)  # held for a few reads and writes
            try:
                fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # others are writing: join them if they share our layout
                directory.seek(0)
                recorded = directory.read()
                if recorded != wanted:
                    raise PrepError(_layout_conflict(out_dir, recorded, num_shards)) from None
            else:  # nobody is writing: record our layout
                directory.truncate(0)
                directory.write(wanted)
                directory.flush()
            fcntl.flock(directory, fcntl.LOCK_SH)
        partition = held.enter_context(open(out_dir / f".lock-{layout.shard_prefix}", "w"))
        try:
            fcntl.flock(partition, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepError(
                f"another `eegfm prep` is writing {layout.manifest} in {out_dir}; "
                "wait for it to finish or use another --out"
            ) from None
        yield


def _layout_conflict(out_dir: Path, recorded: str, num_shards: int) -> str:
    """The one-line refusal of a writer whose --num-shards differs from the running ones'."""

    def layout(count: str) -> str:
        return "one run without --num-shards" if count == "1" else f"--num-shards {count}"

    running = layout(recorded.strip().removeprefix("num_shards="))
    return (
        f"another `eegfm prep` ({running}) is writing {out_dir}; this one "
        f"({layout(str(num_shards))}) would list recordings twice: wait for it to finish, "
        "write with the same --num-shards, or use another --out"
    )


def _write_failures(path: Path, summary: PrepSummary) -> None:
    records = summary.failures + summary.duplicates
    # not fsynced: a crash loses nothing a rerun does not write again (failures are retried)
    write_jsonl_atomic(path, [json.dumps(r, ensure_ascii=False) for r in records], durable=False)


def _record(outcome: dict, writer: ShardWriter, summary: PrepSummary, fingerprints: dict) -> None:
    status = outcome["status"]
    if status == "skipped":
        summary.skipped.append(outcome["recording_id"])
    elif status == "failed":
        summary.failures.append({k: v for k, v in outcome.items() if k != "status"})
    elif status == "duplicate":
        summary.duplicates.append({k: v for k, v in outcome.items() if k != "status"})
    elif outcome["direct"]:  # already in the shard (and checked against earlier fingerprints)
        entry = outcome["entry"]
        fingerprints[entry.fingerprint] = (entry.recording_id, entry.source)
        summary.converted.append(entry.recording_id)
        summary.eeg_seconds += entry.duration_s
    elif outcome["fingerprint"] in fingerprints:  # duplicate of a recording earlier in this run
        entry: ManifestEntry = outcome["entry"]
        first, source = fingerprints[outcome["fingerprint"]]
        summary.duplicates.append(
            {
                "source": entry.source,
                "recording_id": entry.recording_id,
                "duplicate_of": first,
                "reason": f"duplicate: same samples as {first} ({source}); not stored again",
            }
        )
    else:
        entry = outcome["entry"]
        writer.write_staged(entry)
        fingerprints[entry.fingerprint] = (entry.recording_id, entry.source)
        summary.converted.append(entry.recording_id)
        summary.eeg_seconds += entry.duration_s

"""`eegfm prep` under faults of its output and its processes: a full disk, two runs of different
layouts into one directory, the main process killed while workers convert."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eegmat_shards import link_files

from eegfm.cli import main
from eegfm.prep import PrepError, load_prep_config, run_prep
from eegfm.shards import ShardReader, read_manifest, validate_shards

REPO = Path(__file__).resolve().parents[2]
SHORT = [f"Subject{i:02d}_2.edf" for i in range(8)]  # 62 s each, ~0.94 MB stored
REST = [f"Subject{i:02d}_1.edf" for i in range(12)]  # 182 s each


def _leftovers(out: Path) -> list[str]:
    """Temporary files and staging folders a finished or failed run must not leave."""
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp") or ".staging" in p.name)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _prep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "eegfm", "prep", *args, "--no-progress"]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 6 MB tmpfs (root only): room for two 3-recording shards of SHORT, not for the third."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not permitted'}); "
                    "test_full_disk_simulated covers the same path")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_real_tmpfs(tmp_path: Path, eegmat_dir: Path, small_tmpfs: Path, workers: int):
    source = link_files(tmp_path / "eegmat", eegmat_dir, SHORT)
    config = tmp_path / "small.yaml"
    config.write_text("shard_max_bytes: 2000000\n")  # 3 recordings per shard
    out = small_tmpfs / "out"
    done = _prep(str(source), "--out", str(out), "--config", str(config),
                 "--workers", str(workers))
    err = done.stderr.strip().splitlines()
    assert done.returncode not in (0, -signal.SIGSEGV, 139), done.stderr[-3000:]
    assert len(err) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert err[0].startswith("eegfm prep: ") and str(out) in err[0]
    assert "no space left on device" in err[0].lower()
    assert _leftovers(out) == []
    # the shards closed before the disk filled are kept; with two workers their staged
    # recordings may fill the disk before the first shard closes, leaving none
    listed = read_manifest(out) if (out / "manifest.jsonl").exists() else []
    assert (0 if workers > 1 else 1) <= len(listed) < len(SHORT)
    assert not listed or validate_shards(out) == []
    # more room: running again finishes the directory (one worker: resuming does not depend
    # on the worker count, test_prep_jobs.py checks that)
    subprocess.run(["mount", "-o", "remount,size=40m", str(small_tmpfs)], check=True)
    again = _prep(str(source), "--out", str(out), "--config", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(read_manifest(out)) == len(SHORT) and validate_shards(out) == []
    assert _leftovers(out) == []


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, n_blocks: int) -> None:
    """Make the writer's low-level writes fail with ENOSPC after `n_blocks` of them."""
    from eegfm.shards import writer

    calls = {"n": 0}
    real = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] > n_blocks:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(writer.os, "pwrite", pwrite, raising=True)


def test_full_disk_simulated(tmp_path: Path, eegmat_dir: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys):
    """Where no tmpfs can be mounted: every write of the shard writer fails with ENOSPC."""
    source = link_files(tmp_path / "eegmat", eegmat_dir, SHORT[:2])
    out = tmp_path / "out"
    config = _yaml(tmp_path, shard_max_bytes=900_000)  # one recording per shard
    assert main(["prep", str(source), "--out", str(out), "--no-progress", "--config",
                 str(config)]) == 0
    for name in SHORT[2:4]:
        (source / name).symlink_to(eegmat_dir / name)
    capsys.readouterr()
    _fill_disk_after(monkeypatch, 0)
    code = main(["prep", str(source), "--out", str(out), "--no-progress", "--config",
                 str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("eegfm prep: "), err
    assert str(out) in err[0] and "no space left on device" in err[0].lower()
    assert _leftovers(out) == []
    assert [e.recording_id for e in read_manifest(out)] == [
        "eegmat__Subject00_2.edf", "eegmat__Subject01_2.edf"]
    assert validate_shards(out) == []
    monkeypatch.undo()
    again = run_prep([str(source)], out, load_prep_config(config), progress=False)
    assert len(again.converted) == 2 and len(again.skipped) == 2
    assert validate_shards(out) == []


def _yaml(tmp_path: Path, **values) -> Path:
    path = tmp_path / "prep.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


def test_full_disk_error_is_a_data_error(tmp_path: Path, eegmat_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch):
    """A full disk is a data error (exit 1), not a configuration error (2)."""
    source = link_files(tmp_path / "eegmat", eegmat_dir, SHORT[:1])
    _fill_disk_after(monkeypatch, 2)
    with pytest.raises(PrepError, match="no space left on device") as caught:
        run_prep([str(source)], tmp_path / "out", load_prep_config(None), progress=False)
    assert getattr(caught.value, "exit_code", 2) == 1


def test_full_disk_exits_1(tmp_path: Path, eegmat_dir: Path, monkeypatch: pytest.MonkeyPatch):
    source = link_files(tmp_path / "eegmat", eegmat_dir, SHORT[:1])
    _fill_disk_after(monkeypatch, 2)
    assert main(["prep", str(source), "--out", str(tmp_path / "out"), "--no-progress"]) == 1


@pytest.mark.parametrize("where", ["before_rename", "after_rename"])
def test_a_failed_manifest_rewrite_leaves_no_unlisted_shard(
        tmp_path: Path, eegmat_dir: Path, monkeypatch: pytest.MonkeyPatch, where: str):
    """The second shard's manifest rewrite fails: before its rename (full disk: the shard is
    dropped) or after it (fsync of the directory: the shard is listed, so it stays). Either
    stops the run: a failure of the output is not one of the recording being written."""
    from eegfm.shards import format as shard_format
    from eegfm.shards import writer

    source = link_files(tmp_path / "eegmat", eegmat_dir, SHORT[:3])
    calls = {"n": 0}

    def fail_second(real, error: OSError):
        def patched(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise error
            return real(*args, **kwargs)
        return patched

    if where == "before_rename":
        monkeypatch.setattr(writer, "write_jsonl_atomic", fail_second(
            writer.write_jsonl_atomic, OSError(errno.ENOSPC, "No space left on device")))
        message, listed = "no space left on device", 1
    else:
        monkeypatch.setattr(shard_format, "fsync_dir", fail_second(
            shard_format.fsync_dir, OSError(errno.EIO, "Input/output error")))
        message, listed = "input/output error", 2
    out = tmp_path / "out"
    config = load_prep_config(None, shard_max_bytes=900_000)
    with pytest.raises(PrepError, match=message) as caught:
        run_prep([str(source)], out, config, progress=False)
    assert getattr(caught.value, "exit_code", 2) == 1
    assert len(read_manifest(out)) == listed and validate_shards(out) == []
    assert _leftovers(out) == [] and (out / "failures.jsonl").read_text() == ""
    monkeypatch.undo()
    assert len(run_prep([str(source)], out, config, progress=False).converted) == 3 - listed


# ---------------------------------------------------------------------- one layout per --out
def _start_and_freeze(args: list[str], out: Path, staging: str) -> subprocess.Popen:
    """Start `eegfm prep` and stop it (SIGSTOP) once it holds its locks and is converting."""
    process = subprocess.Popen([sys.executable, "-m", "eegfm", "prep", *args, "--out", str(out),
                                "--no-progress"], env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / staging).exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGSTOP)
    return process


def _resume(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]


def test_a_run_of_another_layout_is_refused_while_one_writes(tmp_path: Path, eegmat_dir: Path):
    source = link_files(tmp_path / "eegmat", eegmat_dir, REST[:8])
    out = tmp_path / "out"
    plain = _start_and_freeze([str(source)], out, ".staging")
    try:
        with pytest.raises(PrepError, match=r"another `eegfm prep` .* is writing") as caught:
            run_prep([str(source)], out, shard_index=1, num_shards=2, progress=False)
        assert str(out) in str(caught.value) and "--num-shards" in str(caught.value)
    finally:
        _resume(plain)
    assert validate_shards(out) == []
    assert len(ShardReader(out).entries) == 8
    # once the plain run is over, array tasks may write (and find everything done)
    later = run_prep([str(source)], out, shard_index=1, num_shards=2, progress=False)
    assert later.converted == [] and len(later.skipped) == 4


def test_array_tasks_of_one_layout_share_the_directory(tmp_path: Path, eegmat_dir: Path):
    source = link_files(tmp_path / "eegmat", eegmat_dir, REST[:8])
    out = tmp_path / "out"
    task0 = _start_and_freeze([str(source), "--shard-index", "0", "--num-shards", "2"], out,
                              ".staging-00000")
    try:
        task1 = run_prep([str(source)], out, shard_index=1, num_shards=2, progress=False)
        assert len(task1.converted) == 4
        with pytest.raises(PrepError, match=r"another `eegfm prep` is writing manifest-00000"):
            run_prep([str(source)], out, shard_index=0, num_shards=2, progress=False)
        with pytest.raises(PrepError, match=r"\(--num-shards 2\) is writing"):
            run_prep([str(source)], out, progress=False)
        with pytest.raises(PrepError, match=r"\(--num-shards 2\) is writing"):
            run_prep([str(source)], out, shard_index=2, num_shards=3, progress=False)
    finally:
        _resume(task0)
    assert validate_shards(out) == [] and len(ShardReader(out).entries) == 8


# ---------------------------------------------------------------------------------- kill -9
def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    return [d for kid in _children(pid) for d in (kid, *_descendants(kid))]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, which may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="walks /proc (Linux)")
def test_sigkill_of_the_main_process_ends_its_workers(tmp_path: Path, eegmat_dir: Path):
    source = link_files(tmp_path / "eegmat", eegmat_dir, REST)
    process = subprocess.Popen(
        [sys.executable, "-m", "eegfm", "prep", str(source), "--out", str(tmp_path / "out"),
         "--workers", "2", "--no-progress"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spawned: list[int] = []
    try:
        deadline = time.monotonic() + 90
        # resource tracker + forkserver + 2 workers, the workers busy converting
        while len(spawned) < 4 or not any((tmp_path / "out/.staging").glob("*")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
            spawned = _descendants(process.pid)
        spawned = _descendants(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while any(map(_running, spawned)) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in spawned if _running(pid)]
        assert survivors == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in survivors]
    finally:
        for pid in spawned:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)

"""Cost of `data.verify`: opening every recording of shard directories once, as a loader process
does, without verification, with the data checksum only (as format-1 shards are checked), and
with data and metadata checksums (format 2 on, what `data.verify: true` does).

    python benchmarks/bench_verify.py SHARDS [SHARDS...] [--rounds 9]

The shards are read from the page cache after a first untimed pass: the figures are CPU time,
not disk time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

from eegfm.shards import ShardReader


def open_every_recording(roots: list[Path], verify: bool) -> float:
    """Seconds to open (and, with `verify`, check) every recording once in a fresh reader."""
    reader = ShardReader(roots, verify=verify)
    started = time.perf_counter()
    for entry in reader.entries:
        reader.read_window(entry.recording_id, 0, 1)
    elapsed = time.perf_counter() - started
    reader.close()
    return elapsed


def main() -> None:
    """Time the three ways round by round and print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="shard directories")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    entries = ShardReader(args.roots).entries
    hours = sum(e.duration_s for e in entries) / 3600
    mbytes = sum(e.n_channels * e.n_samples * 4 for e in entries) / 1e6
    shards = len({(e.root, e.shard) for e in entries})
    print(f"{len(entries)} recordings in {shards} shard file(s), {hours:.2f} h, {mbytes:.0f} MB")
    open_every_recording(args.roots, verify=True)  # warm the page cache
    rounds = []
    for round_number in range(1, args.rounds + 1):
        plain = open_every_recording(args.roots, verify=False)
        # the data checksum alone: what verify checks in a shard without metadata checksums
        with mock.patch("eegfm.shards.reader.checks_metadata", return_value=False):
            data_only = open_every_recording(args.roots, verify=True)
        both = open_every_recording(args.roots, verify=True)
        rounds.append((plain, data_only, both))
        print(_line(f"round {round_number}", plain, data_only, both, len(entries)))
    # each round times the three side by side, so the median round is robust to other work
    middle = sorted(rounds, key=lambda times: times[2] - times[1])[len(rounds) // 2]
    print(_line(f"median of {len(rounds)}", *middle, len(entries)))


def _line(label: str, plain: float, data_only: float, both: float, n_recordings: int) -> str:
    added = both - data_only
    return (f"{label}: no verify {plain:.3f} s, data checksum {data_only:.3f} s, data + metadata "
            f"{both:.3f} s; metadata adds {added:.3f} s ({1000 * added / n_recordings:.2f} ms "
            "per recording)")


if __name__ == "__main__":
    main()

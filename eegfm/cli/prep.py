"""`eegfm prep SOURCE... --out DIR`: convert recordings into coordinate-tagged HDF5 shards."""

from __future__ import annotations

import argparse
import sys

from eegfm.prep.config import PrepError, load_prep_config
from eegfm.prep.jobs import run_prep
from eegfm.prep.summary import describe_failure


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `eegfm prep`."""
    parser = argparse.ArgumentParser(
        prog="eegfm prep",
        description="Convert EEG recordings (files, folders, BIDS roots, moabb:NAME[:subjects]) "
        "into coordinate-tagged HDF5 shards. Re-running skips recordings already done.",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a file, a folder (searched recursively), a BIDS root, or "
        "moabb:NAME[:SUBJECTS] such as moabb:BNCI2014_001:1-3",
    )
    parser.add_argument("--out", required=True, help="shard directory to write (or resume)")
    parser.add_argument(
        "--config",
        default=None,
        help="prep YAML (default: the values of configs/prep/default.yaml)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--shard-index",
        type=int,
        default=0,
        help="this SLURM array task's index (e.g. $SLURM_ARRAY_TASK_ID)",
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="number of array tasks sharing the sorted source list",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit non-zero if any recording failed"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Run `eegfm prep`; 0 on success, 1 if everything failed (or anything, with --strict)."""
    args = build_parser().parse_args(argv)
    try:
        config = load_prep_config(args.config)
        summary = run_prep(
            args.sources,
            args.out,
            config,
            workers=args.workers,
            shard_index=args.shard_index,
            num_shards=args.num_shards,
            strict=args.strict,
            progress=not args.no_progress,
        )
    except PrepError as error:
        print(f"eegfm prep: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)  # 1 for an output that cannot be written
    rate = summary.eeg_seconds / summary.seconds if summary.seconds else 0.0
    print(
        f"converted {len(summary.converted)} recording(s), {summary.eeg_seconds / 3600:.2f} h "
        f"of EEG in {summary.seconds:.1f} s ({rate:.0f} s of EEG per second); "
        f"{len(summary.skipped)} already done; {len(summary.duplicates)} duplicate(s) skipped; "
        f"{len(summary.failures)} failed"
    )
    for failure in summary.failures:
        print(f"  failed: {describe_failure(failure)}", file=sys.stderr)
    if summary.failures or summary.duplicates:
        print(f"details in {args.out}/failures*.jsonl; summary: eegfm inspect {args.out}")
    return summary.exit_code()

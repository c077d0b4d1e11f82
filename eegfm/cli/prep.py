"""`eegfm prep SOURCE... --out DIR`: convert recordings into coordinate-tagged HDF5 shards.

    eegfm prep SOURCE... --out DIR [--config prep.yaml] [--sfreq 250] [--lowpass_hz 40]

Every field of :class:`~eegfm.prep.config.PrepConfig` is an option of its name (options after
``--config`` override the file; ``--print_config`` prints the resolved settings and exits); the
sources, ``--out`` and how the run is split (``--workers``, ``--shard-index``, ...) are not
settings of the conversion and stay plain arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import SUPPRESS, ArgumentParser

from eegfm.config import ConfigError, config_parser, parse_config
from eegfm.prep.config import HASH_KEY, PrepConfig, PrepError
from eegfm.prep.jobs import run_prep
from eegfm.prep.summary import describe_failure


def build_parser() -> ArgumentParser:
    """Arguments of `eegfm prep`: the run's own, then the fields of PrepConfig."""
    parser = config_parser(
        PrepConfig, prog="eegfm prep",
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
    # the hash a run writes into its prep_config.yaml, so that file can be given as --config
    parser.add_argument(f"--{HASH_KEY}", type=str | None, default=None, help=SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `eegfm prep`; 0 on success, 1 if everything failed (or anything, with --strict)."""
    try:
        config, args = parse_config(build_parser(), PrepConfig, argv)
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
    except (ConfigError, PrepError) as error:
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

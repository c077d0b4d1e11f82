"""`eegfm validate DIR`: schema and checksums of every shard; non-zero exit names the damage."""

from __future__ import annotations

import argparse
import logging
import sys

from eegfm.shards import check_shards, read_manifest

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    """Validate a shard directory; 0 if intact, 1 listing each damaged shard / recording."""
    parser = argparse.ArgumentParser(
        prog="eegfm validate",
        description="Check the schema and recompute the data checksum of every recording.",
    )
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    report = check_shards(args.directory, progress=not args.no_progress)
    problems = report.problems
    for note in report.notes:
        log.info(f"NOTE {note}")
    if problems:
        for problem in problems:
            print(f"DAMAGED {problem}", file=sys.stderr)
        print(f"eegfm validate: {len(problems)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    print(f"{args.directory}: {len(read_manifest(args.directory))} recordings, all checksums OK")
    return 0

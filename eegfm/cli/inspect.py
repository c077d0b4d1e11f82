"""`eegfm inspect DIR`: hours, recordings, subjects, datasets, montages and failures of shards."""

from __future__ import annotations

import argparse
import json
import sys

from eegfm.prep.summary import format_summary, summarize


def main(argv: list[str]) -> int:
    """Print the summary of a shard directory; 2 if it is not one."""
    parser = argparse.ArgumentParser(
        prog="eegfm inspect", description="Summarise a shard directory written by prep."
    )
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.directory)
    except (FileNotFoundError, ValueError) as error:
        print(f"eegfm inspect: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0

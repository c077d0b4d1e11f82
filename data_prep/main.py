"""Stage 1 entry point: `python data_prep/main.py SOURCE... --out DIR` (same as `eegfm prep`)."""

from __future__ import annotations

import sys

from eegfm.cli.prep import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

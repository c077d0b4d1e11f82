"""Stage 2 entry point: `python pretrain/main.py --config CFG --data SHARDS` = `eegfm pretrain`."""

from __future__ import annotations

import sys

from eegfm.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

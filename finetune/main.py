"""Stage 3 entry point: `python finetune/main.py --config ... --data ...` (= `eegfm finetune`)."""

from __future__ import annotations

import sys

from eegfm.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

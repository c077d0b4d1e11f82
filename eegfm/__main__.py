"""`python -m eegfm` is the same as the `eegfm` console script."""

import sys

from eegfm.cli import main

sys.exit(main())

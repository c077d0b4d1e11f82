"""Stage 1: any EEG recording -> coordinate-tagged HDF5 shards (no torch).

Sources (files, folders, BIDS roots, `moabb:` datasets) are opened lazily, cleaned by small pure
steps (pick EEG, locate, resample, notch + band-pass, re-reference, µV, flag channels, events)
run block by block, and written through `eegfm.shards`. See docs/prep.md.
"""

from eegfm.prep.config import PrepConfig, PrepError, config_hash, load_prep_config
from eegfm.prep.jobs import PrepSummary, run_prep
from eegfm.prep.pipeline import process_raw, write_raw
from eegfm.prep.readers import load_item, read_recording_file
from eegfm.prep.sources import expand_sources

__all__ = [
    "PrepConfig",
    "PrepError",
    "PrepSummary",
    "config_hash",
    "expand_sources",
    "load_item",
    "load_prep_config",
    "process_raw",
    "read_recording_file",
    "run_prep",
    "write_raw",
]

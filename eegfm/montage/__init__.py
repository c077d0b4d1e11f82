"""Channel names and electrode positions for any EEG device (no torch).

`locate_channels(info)` gives every channel a position in MNE's head frame (metres) from, in
order, the file's own digitisation, a user montage, MNE's colin27_1005 template (after
`normalize_channel_name` and `ALIASES`) or a vendor layout recognised from the whole cap; what
cannot be placed is reported as unresolved, never guessed. `montage_id` names a channel set.
See docs/montage.md for the rules and the reasons behind them.
"""

from eegfm.montage.layouts import VENDOR_MIN_FRACTION, VendorLayout, recognise_vendor
from eegfm.montage.locate import (
    HEADER_LAYOUT,
    NON_SCALP,
    UNRESOLVED,
    ChannelLocation,
    Localization,
    locate_channels,
    montage_id,
)
from eegfm.montage.names import (
    ALIASES,
    EAR_REFERENCES,
    NON_SCALP_PREFIXES,
    is_non_scalp,
    normalize_channel_name,
    numbering_scheme,
)
from eegfm.montage.user import SUPPORTED_EXTENSIONS, read_user_montage

__all__ = [
    "ALIASES",
    "EAR_REFERENCES",
    "HEADER_LAYOUT",
    "NON_SCALP",
    "NON_SCALP_PREFIXES",
    "SUPPORTED_EXTENSIONS",
    "UNRESOLVED",
    "VENDOR_MIN_FRACTION",
    "ChannelLocation",
    "Localization",
    "VendorLayout",
    "is_non_scalp",
    "locate_channels",
    "montage_id",
    "normalize_channel_name",
    "numbering_scheme",
    "read_user_montage",
    "recognise_vendor",
]

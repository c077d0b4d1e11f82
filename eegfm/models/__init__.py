"""Models: coordinate-embedded patch tokens, spatially guided transformer, masked pretraining.

Depends on torch and timm only.
"""

from eegfm.models.encoder import EEGEncoder, EncoderInputs
from eegfm.models.masking import (
    MASK_KINDS,
    channel_token_mask,
    mixed_mask,
    random_patch_mask,
    spatial_block_mask,
)
from eegfm.models.pretrainer import MaskedPretrainer
from eegfm.models.registry import create_model, list_models, model_config, register_model

__all__ = [
    "MASK_KINDS",
    "EEGEncoder",
    "EncoderInputs",
    "MaskedPretrainer",
    "channel_token_mask",
    "create_model",
    "list_models",
    "mixed_mask",
    "model_config",
    "random_patch_mask",
    "register_model",
    "spatial_block_mask",
]

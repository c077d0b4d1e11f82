"""Fine-tuning heads on encoder tokens: linear probe, attention-pool MLP, shared/routed experts."""

from eegfm.heads.attention_pool import AttentionPoolHead
from eegfm.heads.augment import ViewAugmenter, make_view_augmenter
from eegfm.heads.base import Head, HeadLoss, check_tokens, masked_mean_pool
from eegfm.heads.linear import LinearHead
from eegfm.heads.registry import create_head, head_options, list_heads
from eegfm.heads.shared_routed import SharedRoutedHead

__all__ = [
    "AttentionPoolHead",
    "Head",
    "HeadLoss",
    "LinearHead",
    "SharedRoutedHead",
    "ViewAugmenter",
    "check_tokens",
    "create_head",
    "head_options",
    "list_heads",
    "make_view_augmenter",
    "masked_mean_pool",
]

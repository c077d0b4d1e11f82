"""``create_head``: build a fine-tuning head by name, with optional spiking neurons."""

from __future__ import annotations

from typing import Any

from eegfm.heads.attention_pool import AttentionPoolHead
from eegfm.heads.base import NEURON_OPTIONS, Head, build_head, own_options
from eegfm.heads.linear import LinearHead
from eegfm.heads.shared_routed import SharedRoutedHead

HEADS: dict[str, type[Head]] = {
    "linear": LinearHead,
    "mlp": AttentionPoolHead,
    "shared_routed": SharedRoutedHead,
}


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`."""
    return sorted(HEADS)


def head_options(name: str) -> list[str]:
    """Keyword options a head accepts (its own plus the neuron options)."""
    return sorted([*own_options(_head_class(name)), *NEURON_OPTIONS])


def create_head(name: str, embed_dim: int, n_classes: int, spiking: str = "none",
                **options: Any) -> Head:
    """Build head ``name`` ('linear' | 'mlp' | 'shared_routed') for ``embed_dim`` features.

    ``spiking`` is 'none', 'lif' or 'int'. Neuron options (``timesteps``, ``tau``,
    ``threshold``, ``reset``, ``v_reset``, ``detach_reset``, ``surrogate``,
    ``surrogate_slope``, ``max_level``) go to :class:`~eegfm.spiking.NeuronConfig`; the rest
    to the head class. The call's arguments are kept in ``head.config`` to rebuild it.
    """
    return build_head(_head_class(name), name, embed_dim, n_classes, spiking, **options)


def _head_class(name: str) -> type[Head]:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}: choose one of {', '.join(list_heads())}")
    return HEADS[name]

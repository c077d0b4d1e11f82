"""``create_head``: build a fine-tuning head by name, with optional spiking neurons."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from eegfm.heads.attention_pool import AttentionPoolHead
from eegfm.heads.base import Head
from eegfm.heads.linear import LinearHead
from eegfm.heads.shared_routed import SharedRoutedHead
from eegfm.spiking import SPIKING_MODES, NeuronConfig

HEADS: dict[str, type[Head]] = {
    "linear": LinearHead,
    "mlp": AttentionPoolHead,
    "shared_routed": SharedRoutedHead,
}
NEURON_OPTIONS = tuple(f.name for f in dataclasses.fields(NeuronConfig))


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`."""
    return sorted(HEADS)


def head_options(name: str) -> list[str]:
    """Keyword options a head accepts (its own plus the neuron options)."""
    return sorted([*_own_options(_head_class(name)), *NEURON_OPTIONS])


def create_head(name: str, embed_dim: int, n_classes: int, spiking: str = "none",
                **options: Any) -> Head:
    """Build head ``name`` ('linear' | 'mlp' | 'shared_routed') for ``embed_dim`` features.

    ``spiking`` is 'none', 'lif' or 'int'. Neuron options (``timesteps``, ``tau``,
    ``threshold``, ``reset``, ``v_reset``, ``detach_reset``, ``surrogate``,
    ``surrogate_slope``, ``max_level``) go to :class:`~eegfm.spiking.NeuronConfig`; the rest
    to the head class. The call's arguments are kept in ``head.config`` to rebuild it.
    """
    cls = _head_class(name)
    if spiking not in SPIKING_MODES:
        raise ValueError(f"--spiking must be one of {', '.join(SPIKING_MODES)}, got {spiking!r}")
    neuron_options = {k: options.pop(k) for k in list(options) if k in NEURON_OPTIONS}
    allowed = _own_options(cls)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"head '{name}' has no option(s) {unknown}; it accepts "
                        f"{sorted([*allowed, *NEURON_OPTIONS])}")
    if spiking == "int":
        neuron_options["timesteps"] = 1  # integer training runs one step; D is max_level
    head = cls(embed_dim, n_classes, spiking, NeuronConfig(**neuron_options), **options)
    head.config = {"name": name, "embed_dim": embed_dim, "n_classes": n_classes,
                   "spiking": spiking, **neuron_options, **options}
    return head


def _head_class(name: str) -> type[Head]:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}: choose one of {', '.join(list_heads())}")
    return HEADS[name]


def _own_options(cls: type[Head]) -> list[str]:
    fixed = {"self", "embed_dim", "n_classes", "spiking", "neuron"}
    return [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]

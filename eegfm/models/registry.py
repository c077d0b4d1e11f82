"""Model registry: named sizes, ``create_model(name, **overrides)``, ``list_models()``.

``configs/model/{tiny,small,base,large}.yaml`` mirror these factories key for key
(``create_model(**yaml.safe_load(f))`` builds the same model; a test checks they agree).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from eegfm.models.encoder import EEGEncoder

_FACTORIES: dict[str, Callable[..., EEGEncoder]] = {}
_SIZES: dict[str, dict[str, Any]] = {}


def register_model(
    size: dict[str, Any],
) -> Callable[[Callable[..., EEGEncoder]], Callable[..., EEGEncoder]]:
    """Decorator: register a factory under its function name with its size overrides."""

    def decorate(factory: Callable[..., EEGEncoder]) -> Callable[..., EEGEncoder]:
        _FACTORIES[factory.__name__] = factory
        _SIZES[factory.__name__] = dict(size)
        return factory

    return decorate


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, smallest first."""
    return list(_FACTORIES)


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Complete ``EEGEncoder`` keyword arguments of a registered size (+ overrides)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    defaults = {key: p.default for key, p in inspect.signature(EEGEncoder).parameters.items()}
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown EEGEncoder option(s) {sorted(unknown)} for {name!r}")
    return {**defaults, **_SIZES[name], **overrides}


def create_model(name: str, **overrides: Any) -> EEGEncoder:
    """Build a registered encoder, e.g. ``create_model("eegfm_small", num_classes=2)``."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _FACTORIES[name](**overrides)


def _build(name: str, overrides: dict[str, Any]) -> EEGEncoder:
    """Instantiate ``name`` with its size and the caller's overrides."""
    return EEGEncoder(**model_config(name, **overrides))


@register_model(dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, max_patches=64))
def eegfm_tiny(**overrides: Any) -> EEGEncoder:
    """~0.15 M parameters: unit tests and CPU demos."""
    return _build("eegfm_tiny", overrides)


@register_model(dict(embed_dim=192, depth=8, num_heads=6, mlp_ratio=4.0, max_patches=64))
def eegfm_small(**overrides: Any) -> EEGEncoder:
    """~5 M parameters: the size compared with LaBraM/CBraMod/LUNA in the benchmark."""
    return _build("eegfm_small", overrides)


@register_model(dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, max_patches=128))
def eegfm_base(**overrides: Any) -> EEGEncoder:
    """~29 M parameters: single-GPU pretraining."""
    return _build("eegfm_base", overrides)


@register_model(dict(embed_dim=768, depth=16, num_heads=12, mlp_ratio=4.0, max_patches=128,
                     drop_path_rate=0.1))
def eegfm_large(**overrides: Any) -> EEGEncoder:
    """~150 M parameters: multi-node pretraining."""
    return _build("eegfm_large", overrides)

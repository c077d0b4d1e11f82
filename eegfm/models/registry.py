"""Model registry: named sizes, ``create_model(name, **overrides)``, ``list_models()``.

``configs/model/{tiny,small,base,large}.yaml`` mirror these factories key for key
(``create_model(**yaml.safe_load(f))`` builds the same model; a test checks they agree).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from eegfm.models.encoder import EEGEncoder

_FACTORIES: dict[str, Callable[..., EEGEncoder]] = {}
# options that change training only, not the weights' shapes or meaning: free to differ
# between a saved encoder and the one it is loaded into
_FREE_OPTIONS = {"drop_rate", "attn_drop_rate", "drop_path_rate", "knn_recompute_above"}
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
        hint = ("; the encoder has no classifier: build one on its tokens with "
                "eegfm.heads.create_head") if "num_classes" in unknown else ""
        raise ValueError(f"unknown EEGEncoder option(s) {sorted(unknown)} for {name!r}{hint}")
    return {**defaults, **_SIZES[name], **overrides}


def released_models() -> list[str]:
    """Names whose weights ship with this eegfm (``eegfm/weights/<name>/`` model folders)."""
    root = files("eegfm") / "weights"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def released_weights(name: str) -> Path:
    """The model folder of the weights released for ``name``."""
    if name not in released_models():
        released = ", ".join(released_models()) or "none yet"
        raise ValueError(f"no pretrained weights for {name!r} ship with this eegfm (released: "
                         f"{released}); pass checkpoint_path=FOLDER to load your own")
    return Path(str(files("eegfm") / "weights" / name))


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **overrides: Any,
) -> EEGEncoder:
    """Build a registered encoder, e.g. ``create_model("eegfm_small", drop_path_rate=0.1)``.

    ``checkpoint_path`` (a model folder, Hub id or older single file) or ``pretrained=True``
    (the weights released with eegfm) loads saved encoder weights into it; the saved model must
    have this name's architecture (training-only options such as dropout may differ).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _FACTORIES[name](**overrides)
    if pretrained and checkpoint_path is None:
        checkpoint_path = released_weights(name)
    if checkpoint_path is None:
        return model
    saved = EEGEncoder.from_pretrained(checkpoint_path)
    differ = sorted(k for k in model.config
                    if k not in _FREE_OPTIONS and saved.config[k] != model.config[k])
    if differ:
        raise ValueError(
            f"{checkpoint_path} does not hold a {name} with these options: "
            + ", ".join(f"{k}={saved.config[k]!r} there, {model.config[k]!r} here" for k in differ)
        )
    model.load_state_dict(saved.state_dict())
    model.preprocessing.update(saved.preprocessing)
    return model


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

"""The configs that ship with eegfm (prep, model, pretraining, fine-tuning YAML files).

They live inside the package so that a plain ``pip install`` finds them; in a clone,
``configs/`` at the repository root links here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("finetune", "model", "prep", "pretrain")


def config_path(kind: str, name: str) -> Path:
    """The file of packaged config ``kind/name`` (e.g. ``config_path("pretrain", "tiny.yaml")``)."""
    resource = resources.files(__name__).joinpath(kind, name)
    if kind not in KINDS or not resource.is_file():
        raise FileNotFoundError(f"no packaged config {kind}/{name}; packaged: "
                                f"{', '.join(packaged_configs())}")
    # wheels and editable installs both leave the package as plain files, so the resource is a
    # path that LightningCLI and yaml can open directly
    return Path(str(resource))


def packaged_configs() -> list[str]:
    """Every packaged config as ``kind/name``."""
    root = resources.files(__name__)
    return sorted(f"{kind}/{item.name}" for kind in KINDS
                  for item in root.joinpath(kind).iterdir() if item.name.endswith(".yaml"))

"""The packaged configs: found through importlib.resources, and all of them shipped."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

import eegfm
from eegfm.configs import config_path, packaged_configs

PACKAGE = Path(eegfm.__file__).parent


def test_config_path_finds_the_demo_configs() -> None:
    for kind, name in (("pretrain", "tiny.yaml"), ("finetune", "eegmat.yaml"),
                       ("finetune", "moabb.yaml"), ("prep", "default.yaml")):
        path = config_path(kind, name)
        assert path.is_file() and path.parent.parent == PACKAGE / "configs"


def test_unknown_config_names_what_is_packaged() -> None:
    with pytest.raises(FileNotFoundError, match=r"no packaged config finetune/nope.yaml; "
                                                r"packaged: .*finetune/eegmat.yaml"):
        config_path("finetune", "nope.yaml")


def test_every_config_file_is_package_data() -> None:
    """A YAML the package-data glob misses would be absent from a `pip install .`."""
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["eegfm"]
    files = sorted(p.relative_to(PACKAGE).as_posix()
                   for p in (PACKAGE / "configs").rglob("*") if p.suffix in {".yaml", ".yml"})
    assert files and all(any(fnmatch(f, g) for g in globs) for f in files), files
    assert sorted(f"configs/{c}" for c in packaged_configs()) == files

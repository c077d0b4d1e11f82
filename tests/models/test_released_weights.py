"""The encoders released under weights/ (issue #15): each loads by every documented route, its
folder says where it came from, and the downstream figures its model card states reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eegmat_shards import prep_eegmat_subjects

from eegfm.checkpoint import from_pretrained
from eegfm.configs import config_path
from eegfm.model_folder import HALF_ABOVE_BYTES
from eegfm.models import create_model
from eegfm.models.registry import released_models
from eegfm.training.finetune.runner import resolve_config, run_finetune

REPO = Path(__file__).resolve().parents[2]
RELEASES = ("eegfm_tiny", "eegfm_small")


@pytest.fixture(scope="module", params=RELEASES)
def name(request: pytest.FixtureRequest) -> str:
    """The registry name of one release."""
    return request.param


@pytest.fixture(scope="module")
def weights(name: str) -> Path:
    """The release's model folder, through the repository's `weights/` link."""
    return REPO / "weights" / name


@pytest.fixture(scope="module")
def config(weights: Path) -> dict:
    """The release's config.json."""
    return json.loads((weights / "config.json").read_text())


@pytest.fixture(scope="module")
def extra(config: dict) -> dict:
    """The provenance and figures the release wrote into config.json."""
    return config["extra"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, eegmat_dir: Path) -> Path:
    """The 24 eegmat subjects of ../shared, prepped once for every release."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, [f"{i:02d}" for i in range(24)])


def test_the_released_encoder_loads_by_every_route(name: str, weights: Path, config: dict,
                                                  extra: dict) -> None:
    assert set(RELEASES) <= set(released_models())
    assert (REPO / "weights").resolve() == (REPO / "eegfm" / "weights").resolve()
    released = create_model(name, pretrained=True)
    folder = from_pretrained(weights)
    for key, value in folder.state_dict().items():
        torch.testing.assert_close(released.state_dict()[key], value, rtol=0, atol=0)
    float32_bytes = sum(4 * v.numel() for v in folder.state_dict().values()
                        if v.is_floating_point())
    assert config["weights_dtype"] == ("float16" if float32_bytes > HALF_ABOVE_BYTES
                                       else "float32")
    for key in ("study_cell", "global_step", "corpus", "corpus_hours", "objective", "command"):
        assert extra[key], key
    card = (weights / "README.md").read_text()
    figures = extra["eegmat_5fold_balanced_accuracy"]["probe-lr"]
    for model in ("pretrained", "pretrained (aligned)"):
        assert f"| probe-lr | {model} | {figures[model]:.3f} |" in card
    assert f"{extra['global_step']:,}" in card and extra["command"] in card


def test_the_model_cards_frozen_probe_figures_reproduce(tmp_path_factory, shards: Path,
                                                        name: str, weights: Path,
                                                        extra: dict) -> None:
    """`eegfm finetune` with configs/finetune/eegmat.yaml on the 24 subjects of ../shared gives
    the card's frozen-probe figures (read from float16 weights where the release stores them),
    and, aligned and wherever the card says so unaligned, at least tangent space + LR's."""
    results = run_finetune(resolve_config(
        config_path("finetune", "eegmat.yaml"), data=str(shards),
        checkpoint=str(weights),
        models=["pretrained", "tangent_lr"], out=str(tmp_path_factory.mktemp("release")),
        save_model=False, progress=False, n_bootstrap=100))
    score = {model: entry["summary"]["balanced_accuracy"]["mean"]
             for model, entry in results["models"].items()}
    recorded = extra["eegmat_5fold_balanced_accuracy"]
    for model in ("pretrained", "pretrained (aligned)"):
        assert score[model] == pytest.approx(recorded["probe-lr"][model], abs=0.005), model
    for model in ("tangent space + LR", "tangent space + LR (aligned)"):
        assert score[model] == pytest.approx(recorded["probe"][model], abs=0.005), model
    # the card's verdict: where its probe is at least tangent space + LR's, the rerun is too
    claimed = [suffix for suffix in ("", " (aligned)")
               if recorded["probe-lr"]["pretrained" + suffix]
               >= recorded["probe"]["tangent space + LR" + suffix]]
    assert " (aligned)" in claimed and (name == "eegfm_tiny" or "" in claimed), claimed
    for suffix in claimed:
        assert score["pretrained" + suffix] >= score["tangent space + LR" + suffix], suffix

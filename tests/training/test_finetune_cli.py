"""`eegfm finetune` option parsing: one grammar, the fields of FinetuneConfig as dotted options."""

from __future__ import annotations

import pytest
import yaml

from eegfm.cli import main as eegfm_main
from eegfm.cli.finetune import build_parser, main
from eegfm.config import parse_config
from eegfm.configs import config_path
from eegfm.training.finetune.config import FinetuneConfig

EEGMAT = str(config_path("finetune", "eegmat.yaml"))


def parsed(*argv: str) -> FinetuneConfig:
    """The config `eegfm finetune ARGV` would run."""
    return parse_config(build_parser(), FinetuneConfig, argv)[0]


def test_print_config_shows_the_override(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        eegfm_main(["finetune", "--config", EEGMAT, "--train.patience", "3", "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["patience"] == 3
    assert printed["protocol"] == "kfold" and printed["task"]["window_s"] == 4.0  # the file's


def test_options_after_the_file_override_it() -> None:
    config = parsed("--config", EEGMAT, "--train.epochs", "2", "--train.lr", "1e-3",
                    "--n_folds", "3", "--max_folds", "1", "--save_model", "false",
                    "--models", "[random_init,tangent_lr]", "--align", "[none]",
                    "--train.accelerator", "cpu", "--data", "[a,b]")
    assert (config.train.epochs, config.train.lr, config.n_folds, config.max_folds) == (
        2, 1e-3, 3, 1)
    assert config.save_model is False and config.models == ["random_init", "tangent_lr"]
    assert config.align == ["none"] and config.data == ["a", "b"]
    assert config.task.name.startswith("eegmat")  # the rest of the file is kept
    assert parsed("--config", EEGMAT).train.epochs == 30


def test_head_options_and_split_lists() -> None:
    config = parsed("--head", "shared_routed", "--head_options.branch", "shared",
                    "--head_options.n_experts", "4", "--head_options.reweight", "false")
    assert config.head_options == {"branch": "shared", "n_experts": 4, "reweight": False}
    assert parsed("--head_options", "{branch: routed}").head_options == {"branch": "routed"}
    split = parsed("--protocol", "split", "--split.train", '["00","01"]',
                   "--split.test+", "02").split
    assert (split.train, split.val, split.test) == (["00", "01"], [], ["02"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--train.patiense", "3"], "--train.patiense"),
    (["--train.patience", "three"], "train.patience: expected int, got three"),
    (["--n_folds", "1.5"], "n_folds: expected int, got 1.5"),
    (["--head", "transformer"], "head: expected one of"),
    (["--task.pattren", "x"], "unknown key 'task.pattren'"),
    (["--train.patience", "0"], "train.patience must be >= 1"),  # the dataclass's own check
    (["--models", "random_init,tangent_lr"], "models: expected list"),
])
def test_bad_options_are_one_line_exit_2(capsys: pytest.CaptureFixture, argv: list[str],
                                         message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eegfm finetune: ") and message in err[0], err


def test_bad_file_is_one_line_exit_2(tmp_path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [unclosed\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--config {bad}" in err[0], err


def test_yaml_is_parsed_safely(tmp_path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"out: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["--config", str(evil)]) == 2
    assert not marker.exists(), "a Python tag in a config ran"
    assert "python/object/apply" in capsys.readouterr().err
    # a class spec in free-form options stays data: jsonargparse builds no object from it
    spec = {"class_path": "calendar.TextCalendar", "init_args": {"firstweekday": 2}}
    text = yaml.safe_dump(spec, default_flow_style=True)
    assert parsed("--head_options.net", text).head_options == {"net": spec}
    assert parsed("--baselines.eegnet", f"{{net: {text}}}").baselines.eegnet == {"net": spec}


def test_help_lists_every_field_with_its_docstring(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for option in ("--train.patience", "--classical.c_grid", "--head_options", "--n_folds",
                   "--train.accelerator", "--save_model", "--print_config", "--config"):
        assert option in text, option
    assert "Epochs without improvement" in " ".join(text.split())  # TrainConfig.patience's doc

"""`eegfm finetune` option parsing: head options reach the config, bad ones are refused."""

from __future__ import annotations

import pytest

from eegfm.cli.finetune import build_parser, main, overrides_from


def test_head_options_are_parsed_as_yaml_values() -> None:
    args = build_parser().parse_args([
        "--head", "shared_routed", "--head-option", "branch=shared",
        "--head-option", "n_experts=4", "--head-option", "reweight=false",
    ])  # fmt: skip
    assert overrides_from(args)["head_options"] == {
        "branch": "shared", "n_experts": 4, "reweight": False,
    }


def test_no_head_option_keeps_the_config_value() -> None:
    assert "head_options" not in overrides_from(build_parser().parse_args([]))


def test_malformed_head_option_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--head-option", "branch"])
    assert exit_info.value.code == 2
    assert "--head-option 'branch': expected KEY=VALUE" in capsys.readouterr().err

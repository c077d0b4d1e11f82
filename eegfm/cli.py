"""`eegfm` command-line entry point: one subcommand per stage, each implemented in its module."""

from __future__ import annotations

import importlib
import os
import sys

# Each target module exposes `main(argv: list[str]) -> int`; importing lazily keeps `eegfm --help`
# fast and lets `eegfm prep` run without loading torch.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("eegfm.prep.cli", "convert raw recordings into coordinate-tagged HDF5 shards"),
    "inspect": ("eegfm.prep.cli_inspect", "summarise a shard directory"),
    "validate": ("eegfm.prep.cli_validate", "check shard schema and checksums"),
    "pretrain": ("eegfm.training.pretrain_cli", "masked pretraining over shard directories"),
    "finetune": ("eegfm.training.finetune_cli", "fine-tune and evaluate on a labelled task"),
    "predict": ("eegfm.training.predict_cli", "per-window predictions for new recordings"),
    "demo": ("eegfm.training.demo", "prep → pretrain → finetune on real data, minutes on a CPU"),
}


def _usage() -> str:
    lines = ["usage: eegfm COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `eegfm COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `eegfm COMMAND ...` to the module implementing COMMAND."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from eegfm import __version__

        print(f"eegfm {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    # Spinning OpenMP threads make torch many times slower whenever another process competes
    # for the cores (a laptop, a shared node); passive waiting costs little when it does not.
    # Set before the subcommand imports torch; an explicit user setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if command not in SUBCOMMANDS:
        print(f"eegfm: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

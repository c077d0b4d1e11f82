"""`eegfm pretrain`: masked pretraining over shard directories, configured by LightningCLI.

    eegfm pretrain --config configs/pretrain/tiny.yaml --data SHARDS [SHARDS...] \\
        [--run_dir runs/tiny] [--trainer.max_steps 50] [--model.lr 5e-4] [--data.batch_size 16]

Every `--trainer.*`, `--model.*` (MaskedPretrainModule), `--data.*` (PretrainDataModule) and
`--checkpoint.*` (ModelCheckpoint) option can be set in the YAML or on the command line. The run
directory holds everything and never changes on a requeue; a run restarts from the newest of
`RUN_DIR/checkpoints/last.ckpt` and Lightning's SLURM `RUN_DIR/hpc_ckpt_*.ckpt`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from eegfm import console
from eegfm.config import PretrainConfigError
from eegfm.shards.reader import ShardDataError
from eegfm.training.pretrain.callbacks import (
    EncoderExport,
    StepBoundarySignals,
    StepMetricsLogger,
    install_requeue_flag,
)
from eegfm.training.pretrain.datamodule import PretrainDataModule
from eegfm.training.pretrain.module import MaskedPretrainModule

log = logging.getLogger(__name__)

CHECKPOINT_DEFAULTS = {
    "checkpoint.every_n_train_steps": 1000,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": 3,  # periodic checkpoints kept: the 3 latest (monitor=step)
    "checkpoint.monitor": "step",
    "checkpoint.mode": "max",
    "checkpoint.filename": "{step:08d}",
    "checkpoint.enable_version_counter": False,  # a resumed run overwrites, never adds "-v1"
}


def expand_shortcuts(argv: list[str]) -> list[str]:
    """`--data DIR [DIR...]` -> `--data.roots=[...]`; a YAML after --data is left alone."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--data" or arg.startswith("--data="):
            values = [arg.split("=", 1)[1]] if "=" in arg else []
            i += 1
            while "=" not in arg and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if len(values) == 1 and values[0].endswith((".yaml", ".yml", ".json")):
                out += ["--data", values[0]]
            elif values:
                out.append("--data.roots=" + json.dumps(values))
            else:
                out.append(arg)
            continue
        out.append(arg)
        i += 1
    return out


def resolve_resume(resume: str, run_dir: Path) -> str | None:
    """Checkpoint to start from: 'auto' (newest in the run directory, if any), 'never', a path.

    With 'auto', checkpoints that cannot be read (cut short by a crash or a full disk while
    they were saved) are passed over, with a warning, for the newest readable one.
    """
    if resume == "never":
        return None
    if resume != "auto":
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
        problem = checkpoint_problem(Path(resume))
        if problem is not None:
            raise ValueError(f"--resume {resume}: the checkpoint is unreadable ({problem})")
        return resume
    candidates = {*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")}
    # newest first; at equal times last.ckpt and the SLURM ones before the periodic copy
    newest_first = sorted(
        (p for p in candidates if p.is_file()),
        key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt" or p.name.startswith("hpc_")),
        reverse=True,
    )
    unreadable = []
    for path in newest_first:
        problem = checkpoint_problem(path)
        if problem is None:
            if unreadable:
                _warn(f"{_listed(unreadable)} ({unreadable[0][1]}); resuming from {path}, the "
                      f"newest readable checkpoint in {run_dir}")
            return str(path)
        unreadable.append((path, problem))
    if unreadable:
        raise ValueError(f"no readable checkpoint in {run_dir}: {_listed(unreadable)} "
                         f"({unreadable[0][1]}); pass --resume never to start afresh")
    return None


def _listed(unreadable: list[tuple[Path, str]]) -> str:
    names = ", ".join(str(path) for path, _ in unreadable)
    return f"{names} {'is' if len(unreadable) == 1 else 'are'} unreadable"


def checkpoint_problem(path: Path) -> str | None:
    """Why a Lightning checkpoint cannot be loaded (None if it can); tensors are not read."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a damaged file fails in many ways (zip, pickle, EOF, mmap)
        lines = str(error).strip().splitlines() or [""]
        return f"{type(error).__name__}: {lines[0]}"
    return None


@rank_zero_only
def _warn(message: str) -> None:
    log.warning(f"eegfm pretrain: warning: {message}")


def _reader_message(error: ShardDataError) -> str:
    """The reader's one line; from a DataLoader worker it arrives after the worker's traceback."""
    last = str(error).strip().splitlines()[-1]
    for prefix in (f"{ShardDataError.__module__}.{ShardDataError.__name__}: ", "ShardDataError: "):
        last = last.removeprefix(prefix)
    return last


class PretrainCLI(LightningCLI):
    """LightningCLI with a fixed run directory, periodic checkpoints and a resume option."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add --run_dir, --resume and the checkpoint options; tie seeds and paths together."""
        parser.add_argument(
            "--run_dir", type=str, default="runs/pretrain", help="run directory (kept on requeue)"
        )
        parser.add_argument(
            "--resume", type=str, default="auto", help="auto | never | path to a .ckpt"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.link_arguments("run_dir", "trainer.default_root_dir")
        parser.link_arguments(
            "run_dir", "checkpoint.dirpath", compute_fn=lambda d: os.path.join(d, "checkpoints")
        )
        parser.link_arguments("seed_everything", "data.seed", compute_fn=_seed)
        parser.link_arguments("seed_everything", "model.seed", compute_fn=_seed)


def _seed(value: bool | int) -> int:
    if isinstance(value, bool):
        raise ValueError("seed_everything must be an integer for pretraining (runs must resume)")
    return int(value)


def build_cli(argv: list[str]) -> PretrainCLI:
    """Parse the arguments and instantiate trainer, module and datamodule (nothing runs)."""
    with warnings.catch_warnings():
        # `eegfm pretrain` passes its own argv on purpose; sys.argv also holds the subcommand.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return _build(argv)


def _build(argv: list[str]) -> PretrainCLI:
    return PretrainCLI(
        MaskedPretrainModule,
        PretrainDataModule,
        args=expand_shortcuts(argv),
        run=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={
            "logger": False,
            "use_distributed_sampler": False,
            # a bar only on a terminal and without -q: no bar frames in redirected logs
            "enable_progress_bar": console.show_progress(),
            "callbacks": [StepBoundarySignals(), StepMetricsLogger(), EncoderExport()],
        },
        parser_kwargs={"prog": "eegfm pretrain", "description": __doc__.split("\n\n")[0]},
    )


def main(argv: list[str] | None = None) -> int:
    """Run `eegfm pretrain`; resumes from the run directory unless --resume never.

    A run stopped by SIGTERM exits with status 143 (128 + SIGTERM), not 0; a configuration
    error (an option the model or data reject, when the command is built or once they meet in
    `fit`; a missing --resume file) is one line, status 2; a shard that cannot be read (or fails
    a checksum with data.verify) is one line naming it, status 1."""
    install_requeue_flag()  # a time-limit signal during start-up must not end the process
    try:
        cli = build_cli(list(sys.argv[1:] if argv is None else argv))
        run_dir = Path(cli.trainer.default_root_dir)
        ckpt_path = resolve_resume(cli.config["resume"], run_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"eegfm pretrain: {error}", file=sys.stderr)
        return 2
    if ckpt_path:
        rank_zero_info(f"resuming from {ckpt_path}")
    try:
        cli.trainer.fit(
            cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True
        )
    except ShardDataError as error:
        print(f"eegfm pretrain: {_reader_message(error)}", file=sys.stderr)
        return 1
    except PretrainConfigError as error:  # not ValueError: any other one inside fit is a bug
        print(f"eegfm pretrain: {error}", file=sys.stderr)
        return 2
    except SIGTERMException as stop:
        # Lightning ends a run on SIGTERM (a requeue, pre-emption, `scancel`, a pod eviction)
        # after the current step with a bare SystemExit, i.e. exit status 0, as if it had
        # finished: exit with the signal's status instead, so no script or scheduler takes the
        # stopped run for a finished one (callers such as `eegfm demo` stop here too).
        rank_zero_info(
            f"stopped by SIGTERM after step {cli.trainer.global_step}; run the same command "
            "to resume from the newest checkpoint"
        )
        raise SystemExit(128 + signal.SIGTERM) from stop
    except SystemExit as stop:
        # On Ctrl-C Lightning shuts down "gracefully" and calls sys.exit(1), which would pass
        # the dispatcher's KeyboardInterrupt handler: hand the interrupt on, so a stopped
        # `eegfm pretrain` ends as every command does (one line, exit status 130).
        if isinstance(stop.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    return 0

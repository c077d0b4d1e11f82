"""`eegfm demo`: the whole path on real data in minutes on a CPU.

    eegfm demo --source ../shared/eeg/eegmat        # offline: rest vs mental arithmetic
    eegfm demo                                      # moabb:BNCI2014_001:1-4 (MOABB downloads it)

1. prep the source into coordinate-tagged shards (`eegfm prep`),
2. pretrain the tiny encoder briefly on them (`eegfm pretrain`, configs/pretrain/tiny.yaml),
   or, with `--pretrained weights/eegfm_tiny`, take a released encoder instead,
3. fine-tune it with a cross-subject protocol next to the baselines (`eegfm finetune`,
   configs/finetune/eegmat.yaml or moabb.yaml), and print the table.

Every stage writes under `--out`; a second run reuses the converted shards and the finished
pretraining run, and fine-tunes again. The configs ship inside the package
(`eegfm.configs`), so the demo runs from any directory after a plain `pip install`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from eegfm.cli import pretrain as pretrain_cli
from eegfm.config import ConfigError, config_parser, parse_config
from eegfm.configs import config_path
from eegfm.data.tasks.moabb import is_moabb, prepare_moabb
from eegfm.data.tasks.windows import TaskDataError
from eegfm.model_folder import is_model_folder
from eegfm.prep import PrepError, load_prep_config, run_prep
from eegfm.training.finetune.config import DEFAULT_MODELS, Accelerator, Precision
from eegfm.training.finetune.runner import resolve_config, results_summary, run_finetune
from eegfm.training.pretrain.callbacks import ENCODER_FOLDER

DEFAULT_SOURCE = "moabb:BNCI2014_001:1-4"

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What the demo runs on, how long it trains, and where it writes."""

    source: str = DEFAULT_SOURCE
    """A folder laid out like eegmat (SubjectNN_1/2.edf) or moabb:NAME[:subjects] (the default
    is downloaded by MOABB on a machine with internet)."""
    out: str = "runs/demo"
    """Output directory of every stage."""
    seed: int = 0
    """Seed of every stage."""
    pretrain_steps: int = 300
    """Pretraining steps."""
    pretrained: str | None = None
    """An encoder to fine-tune instead of pretraining one (a model folder such as the released
    weights/eegfm_tiny); the demo then runs prep and fine-tuning only."""
    finetune_config: str | None = None
    """Fine-tuning YAML (None: configs/finetune/eegmat.yaml for a folder, moabb.yaml for
    moabb:)."""
    baseline_epochs: int = 10
    """Training epochs of the EEGNet/ShallowNet baselines (enough to show them on a CPU in
    minutes; `eegfm finetune` uses the fine-tuning config's value)."""
    protocol: Literal["loso", "kfold", "within"] | None = None
    """Cross-subject protocol (None: the fine-tuning config's)."""
    head: Literal["linear", "mlp", "shared_routed"] | None = None
    """Classification head (None: the fine-tuning config's)."""
    accelerator: Accelerator | None = None
    """Where pretraining and fine-tuning run: cpu, cuda / gpu (None: each stage's default)."""
    devices: int | None = None
    """Devices to use (fine-tuning uses one)."""
    precision: Precision | None = None
    """32-true, bf16-mixed or 16-mixed (None: each stage's default)."""
    progress: bool = True
    """Show progress bars."""


def build_parser() -> ArgumentParser:
    """The `eegfm demo` argument parser: the fields of DemoConfig."""
    return config_parser(
        DemoConfig, prog="eegfm demo",
        description="prep -> pretrain (tiny) -> cross-subject fine-tuning with baselines, on a "
        "CPU in minutes",
    )


def prepare_shards(source: str, out: Path, finetune_cfg, progress: bool) -> Path:
    """Stage 1: convert the source into shards; returns the shard directory."""
    if is_moabb(source):
        # the fine-tuning runner converts moabb: data into cache_dir with this same prep config,
        # so it finds the recordings already done
        prep_config = load_prep_config(finetune_cfg.prep_config, **finetune_cfg.prep)
        return prepare_moabb(source, prep_config, cache_dir=finetune_cfg.cache_dir,
                             progress=progress).shard_dir
    if not Path(source).exists():
        raise FileNotFoundError(f"--source {source}: no such file or folder")
    shard_dir = out / "shards"
    summary = run_prep([source], shard_dir, load_prep_config(None), progress=progress)
    if not (summary.converted or summary.skipped):
        raise RuntimeError(f"--source {source}: no recording could be converted "
                           f"(see {shard_dir}/failures.jsonl)")
    log.info(f"prep: {len(summary.converted)} converted, {len(summary.skipped)} already done, "
             f"{len(summary.failures)} failed -> {shard_dir}")
    return shard_dir


def pretrain(shard_dir: Path, out: Path, seed: int, steps: int,
             trainer: list[str] | None = None) -> Path:
    """Stage 2: masked pretraining of the tiny encoder; returns the exported encoder folder."""
    run_dir = out / "pretrain"
    pretrain_cli.main([
        "--config", str(config_path("pretrain", "tiny.yaml")),
        "--data", str(shard_dir),
        "--run_dir", str(run_dir),
        "--seed_everything", str(seed),
        "--trainer.max_steps", str(steps), *(trainer or []),
    ])  # fmt: skip
    encoder = run_dir / ENCODER_FOLDER
    if not is_model_folder(encoder):
        raise RuntimeError(f"pretraining finished without writing {encoder}")
    return encoder


def main(argv: Sequence[str] | None = None) -> int:
    """Run `eegfm demo`; prints the cross-subject table and where the report is."""
    try:
        args, _ = parse_config(build_parser(), DemoConfig, argv)
    except ConfigError as error:
        print(f"eegfm demo: {error}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (TaskDataError, ConfigError, PrepError, FileNotFoundError, RuntimeError) as error:
        print(f"eegfm demo: {error}", file=sys.stderr)
        if is_moabb(args.source):
            print("eegfm demo: MOABB datasets download on first use; without internet, run the "
                  "demo on a local folder: eegfm demo --source ../shared/eeg/eegmat",
                  file=sys.stderr)
        return 2


def _run(args: DemoConfig) -> int:
    """The three stages of the demo."""
    started = time.perf_counter()
    out = Path(args.out)
    moabb = is_moabb(args.source)
    finetune_yaml = args.finetune_config or config_path(
        "finetune", "moabb.yaml" if moabb else "eegmat.yaml"
    )
    # the Conformers of eegmat.yaml take most of an hour on a CPU: the demo runs the defaults
    overrides = {"seed": args.seed, "out": str(out / "finetune"), "progress": args.progress,
                 "models": list(DEFAULT_MODELS),
                 "protocol": args.protocol, "head": args.head,
                 "baselines.epochs": args.baseline_epochs,
                 "train.accelerator": args.accelerator, "train.devices": args.devices,
                 "train.precision": args.precision}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if moabb:
        overrides["cache_dir"] = str(out / "moabb")
    finetune_cfg = resolve_config(finetune_yaml, **overrides)

    if args.pretrained is not None and not is_model_folder(args.pretrained):
        raise FileNotFoundError(f"--pretrained {args.pretrained}: not a model folder "
                                "(config.json + model.safetensors)")
    log.info(f"[1/3] prep {args.source}")
    shard_dir = prepare_shards(args.source, out, finetune_cfg, args.progress)
    if args.pretrained is not None:
        log.info(f"[2/3] pretraining skipped: fine-tuning {args.pretrained}")
        encoder = Path(args.pretrained)
    else:
        log.info(f"[2/3] pretrain eegfm_tiny for {args.pretrain_steps} steps")
        device = [f"--trainer.{k}={v}" for k, v in (("accelerator", args.accelerator),
                  ("devices", args.devices), ("precision", args.precision)) if v is not None]
        encoder = pretrain(shard_dir, out, args.seed, args.pretrain_steps, device)
    log.info(f"[3/3] fine-tune ({finetune_cfg.protocol}, head {finetune_cfg.head}) with baselines")
    data = args.source if moabb else str(shard_dir)
    results = run_finetune(resolve_config(finetune_yaml, **overrides, data=data,
                                          checkpoint=str(encoder)))
    print(results_summary(results, time.perf_counter() - started,
                          out / "finetune" / "results.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

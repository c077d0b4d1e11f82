"""``eegfm finetune``: fine-tune and evaluate on a labelled task, write the report.

    eegfm finetune --config configs/finetune/eegmat.yaml --data SHARDS_DIR|moabb:NAME \\
                   --checkpoint CKPT --head linear --protocol kfold --out runs/eegmat

Command-line options override the config file; options left out keep the file's values.
"""

from __future__ import annotations

import argparse
import sys
import time

from eegfm.config import ConfigError
from eegfm.data.tasks.windows import TaskDataError
from eegfm.evaluation import SplitHygieneError
from eegfm.evaluation.alignment import ALIGNMENTS
from eegfm.shards import ShardDataError
from eegfm.training.finetune.config import MODELS, add_device_options

HELP_MODELS = f"comma-separated subset of {','.join(MODELS)}"


def build_parser() -> argparse.ArgumentParser:
    """The ``eegfm finetune`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="eegfm finetune",
        description="Fine-tune a pretrained encoder (and baselines) on a labelled EEG task with "
                    "a cross-subject protocol; writes results.json, results.md and plots.")
    parser.add_argument("--config", help="fine-tuning YAML (configs/finetune/*.yaml)")
    parser.add_argument("--data", nargs="+", help="shard director(y/ies) or moabb:NAME[:subjects]")
    parser.add_argument("--checkpoint", help="pretrained encoder checkpoint; omitted: only the "
                                             "random-init encoder and the baselines run")
    parser.add_argument("--head", choices=["linear", "mlp", "shared_routed"])
    parser.add_argument("--spiking", choices=["none", "lif", "int"])
    parser.add_argument("--head-option", action="append", metavar="KEY=VALUE",
                        help="a head option (repeatable), e.g. --head-option branch=shared; "
                             "VALUE is read as YAML (numbers, true/false, lists)")
    parser.add_argument("--protocol", choices=["loso", "kfold", "within", "split"],
                        help="split: the fixed subject lists of --train/--val/--test-subjects "
                             "(or the config's split section)")
    for part in ("train", "val", "test"):
        parser.add_argument(f"--{part}-subjects", metavar="IDS",
                            help=f"protocol split: comma-separated {part} subject ids")
    parser.add_argument("--align", help="comma-separated subject alignments to run, each a "
                                        f"full set of models: {', '.join(ALIGNMENTS)} "
                                        "(default: the config's, none,euclidean)")
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=None,
                        help="freeze the encoder (default per head: linear and shared_routed "
                             "frozen, mlp fine-tuned)")
    parser.add_argument("--models", help=HELP_MODELS)
    parser.add_argument("--out", help="output directory of the report")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--n-folds", type=int, help="folds of the kfold protocol")
    parser.add_argument("--max-folds", type=int, help="run only the first N folds (quick check)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    add_device_options(parser)
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard logs")
    parser.add_argument("--no-save-model", dest="save_model", action="store_false", default=None,
                        help="skip the final refit on all subjects and its model_<name>/ folder")
    parser.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                        help="run every model again, even those an earlier run of the same "
                             "config finished in --out (kept in OUT/partial/)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return parser


def parse_head_options(items: list[str] | None) -> dict | None:
    """``["branch=shared", "n_experts=4"]`` -> ``{"branch": "shared", "n_experts": 4}``."""
    if not items:
        return None
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--head-option {item!r}: expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    return options


def overrides_from(args: argparse.Namespace) -> dict:
    """Config overrides (dotted keys) from parsed options; unset options are left out."""
    data = args.data
    if data is not None and len(data) == 1:
        data = data[0]
    models, align = _names(args.models), _names(args.align)
    values = {
        "data": data, "checkpoint": args.checkpoint, "head": args.head, "spiking": args.spiking,
        "head_options": parse_head_options(args.head_option),
        "protocol": args.protocol, "freeze": args.freeze, "models": models, "out": args.out,
        "align": align, "split.train": _names(args.train_subjects),
        "split.val": _names(args.val_subjects), "split.test": _names(args.test_subjects),
        "train.epochs": args.epochs, "train.lr": args.lr, "train.batch_size": args.batch_size,
        "seed": args.seed, "n_folds": args.n_folds, "max_folds": args.max_folds,
        "train.threads": args.threads, "tensorboard": args.tensorboard,
        "train.accelerator": args.accelerator, "train.devices": args.devices,
        "train.precision": args.precision,
        "save_model": args.save_model, "progress": args.progress, "resume": args.resume,
    }
    return {k: v for k, v in values.items() if v is not None}


def _names(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None stays None (option not given)."""
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run ``eegfm finetune``; 0 on success, 2 on a configuration or data error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = overrides_from(args)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    from eegfm.training.finetune.runner import resolve_config, results_summary, run_finetune

    try:
        config = resolve_config(args.config, **overrides)
        if config.checkpoint is None and "pretrained" in config.models:
            print("eegfm finetune: no --checkpoint given: running the random-init encoder and "
                  "the baselines only", file=sys.stderr)
        started = time.perf_counter()
        results = run_finetune(config)
    except ShardDataError as error:  # damaged data: named, exit 1 (before ValueError: it is one)
        print(f"eegfm finetune: {error}", file=sys.stderr)
        return 1
    except (ConfigError, TaskDataError, SplitHygieneError, FileNotFoundError, ValueError) as error:
        print(f"eegfm finetune: {error}", file=sys.stderr)
        return 2
    print(results_summary(results, time.perf_counter() - started, f"{config.out}/results.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

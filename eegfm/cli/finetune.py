"""``eegfm finetune``: fine-tune and evaluate on a labelled task, write the report.

    eegfm finetune --config configs/finetune/eegmat.yaml --data SHARDS_DIR|moabb:NAME \\
                   --checkpoint CKPT --head linear --protocol kfold --out runs/eegmat \\
                   [--train.epochs 10] [--train.patience 3] [--models '[pretrained,tangent_lr]']

Every option is a field of :class:`~eegfm.training.finetune.config.FinetuneConfig`, spelled as
its dotted key (``--train.lr``, ``--head_options.branch shared``, ``--save_model false``); options
after ``--config`` override the file, ``--print_config`` prints the resolved config and exits.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from eegfm.config import ConfigError, config_parser, parse_config
from eegfm.data.tasks.windows import TaskDataError
from eegfm.evaluation import SplitHygieneError
from eegfm.shards import ShardDataError
from eegfm.training.finetune.config import FinetuneConfig
from eegfm.training.finetune.runner import results_summary, run_finetune

log = logging.getLogger(__name__)


def build_parser() -> ArgumentParser:
    """The ``eegfm finetune`` argument parser: the fields of FinetuneConfig."""
    return config_parser(
        FinetuneConfig, prog="eegfm finetune",
        description="Fine-tune a pretrained encoder (and baselines) on a labelled EEG task with "
                    "a cross-subject protocol; writes results.json, results.md and plots.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eegfm finetune``; 0 on success, 2 on a configuration or data error."""
    try:
        config, _ = parse_config(build_parser(), FinetuneConfig, argv)
        if config.checkpoint is None and "pretrained" in config.models:
            log.warning("eegfm finetune: no --checkpoint given: running the random-init "
                        "encoder and the baselines only")
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

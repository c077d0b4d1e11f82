"""MOABB benchmark recipe: one fine-tuning config over several MOABB datasets, one table.

    python finetune/moabb_benchmark.py --checkpoint CKPT                     # default datasets
    python finetune/moabb_benchmark.py --datasets BNCI2014_004 Zhou2016 --protocol kfold
    python finetune/moabb_benchmark.py --datasets FakeDataset --epochs 2     # offline check

Each dataset goes through our prep pipeline (cached), is cut with MOABB's LeftRightImagery
paradigm (its events and window), and is evaluated by `run_finetune` with the same models, head,
protocol and seed; `OUT/NAME/` holds each report and `OUT/benchmark.md` the summary. MOABB
downloads real datasets on first use (internet needed once); FakeDataset needs none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eegfm.config import read_yaml
from eegfm.training.finetune.runner import run_finetune

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ["BNCI2014_001", "BNCI2014_004", "Zhou2016", "Cho2017"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options of the recipe."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "finetune" / "moabb.yaml"))
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS)
    parser.add_argument("--paradigm", default="LeftRightImagery")
    parser.add_argument("--checkpoint", help="pretrained encoder; omitted: random init + baselines")
    parser.add_argument("--protocol", default=None, choices=["loso", "kfold", "within"])
    parser.add_argument("--head", default=None, choices=["linear", "mlp", "shared_routed"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--out", default="runs/moabb-benchmark")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every dataset and write OUT/benchmark.md."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base = read_yaml(args.config)
    out = Path(args.out)
    lines = ["# MOABB benchmark", "", f"paradigm {args.paradigm}; config `{args.config}`; "
             "cells: balanced accuracy, mean ± std over test subjects", ""]
    rows = {}
    for name in args.datasets:
        config = {**base, "data": f"moabb:{name}", "out": str(out / name),
                  "checkpoint": args.checkpoint,
                  "task": {**base.get("task", {}), "moabb_paradigm": args.paradigm}}
        for key in ("protocol", "head"):
            if getattr(args, key):
                config[key] = getattr(args, key)
        if args.epochs:
            config["train"] = {**base.get("train", {}), "epochs": args.epochs}
            config["baselines"] = {**base.get("baselines", {}), "epochs": args.epochs}
        results = run_finetune(config)
        rows[name] = {model: entry["summary"]["balanced_accuracy"]
                      for model, entry in results["models"].items()}
    models = list(dict.fromkeys(m for scores in rows.values() for m in scores))
    lines += ["| dataset | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for name, scores in rows.items():
        cells = [f"{scores[m]['mean']:.3f} ± {scores[m]['std'] or 0:.3f}" if m in scores
                 else "n/a" for m in models]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

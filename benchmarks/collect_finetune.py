"""Collect several `eegfm finetune` reports into one markdown table (heads, spiking, routing).

    python benchmarks/collect_finetune.py runs/eegmat-heads/*        # one row per report

Reads each directory's ``results.json`` and prints, per model: balanced accuracy (mean ± std
over test subjects), the head and mode, fit time, and when present the spiking energy summary
(mean firing rate, energy per sample, ratio to the ANN twin) and the routing diagnostics
(expert entropy, load balance, per-subject routing consistency, α), each averaged over folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean
from typing import Any

ROUTING_KEYS = ("expert_entropy", "load_balance", "routing_consistency", "alpha")


def _extra(extras: dict[str, Any], prefix: str) -> Any:
    """The model extra whose title starts with ``prefix`` (titles carry units), or None."""
    return next((value for key, value in extras.items() if key.startswith(prefix)), None)


def _fold_mean(rows: list[dict[str, Any]] | None, key: str) -> float | None:
    values = [row[key] for row in rows or [] if isinstance(row.get(key), (int, float))]
    return mean(values) if values else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def report_rows(run_dir: Path) -> list[list[str]]:
    """Table rows of one report directory (one per model in it)."""
    results = json.loads((run_dir / "results.json").read_text())
    rows = []
    for name, model in results["models"].items():
        info, extras = model["info"], model.get("extras", {})
        bacc = model["summary"]["balanced_accuracy"]
        energy = _extra(extras, "energy (per sample")
        routing = _extra(extras, "routing diagnostics")
        branch = results["config"].get("head_options", {}).get("branch")
        head = info.get("head", "–") + (f" ({branch})" if branch else "")
        rows.append([
            run_dir.name, name, head, info.get("spiking", "none"), info.get("mode", "–"),
            f"{bacc['mean']:.3f} ± {bacc['std']:.3f}",
            _fmt(_fold_mean(energy, "mean_firing_rate")),
            _fmt(_fold_mean(energy, "energy_pj")),
            _fmt(_fold_mean(energy, "ann_energy_pj")),
            _fmt(_fold_mean(energy, "energy_ratio")),
            *(_fmt(_fold_mean(routing, key)) for key in ROUTING_KEYS),
            f"{info.get('total_s', float('nan')):.0f}",
        ])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table of the given report directories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finetune --out directories")
    args = parser.parse_args(argv)
    header = ["run", "model", "head", "spiking", "mode", "bal. acc.", "firing rate",
              "energy pJ", "ANN pJ", "energy ratio", *ROUTING_KEYS, "time s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in args.runs:
        if not (run / "results.json").is_file():
            print(f"skipping {run}: no results.json", file=sys.stderr)
            continue
        for row in report_rows(run):
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

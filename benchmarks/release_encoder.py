"""Release one encoder of the pretraining study as `eegfm/weights/<name>/` (`weights/` at the
repository root links there), with a model card built from the study's own measurements.

    python benchmarks/release_encoder.py --study runs/study --cell tiny-eegmat-all-12000 \
        --step 12000 --name eegfm_tiny

The folder is the model-folder format of `eegfm.model_folder` (config.json + model.safetensors,
float16 only above 10 MB), so `eegfm.from_pretrained("weights/eegfm_tiny")`,
`create_model("eegfm_tiny", pretrained=True)`, `eegfm finetune --checkpoint weights/eegfm_tiny`
and `eegfm demo --pretrained weights/eegfm_tiny` read it. The card (README.md) states the data
and its hours, the steps, the objective, the command that pretrained it, and every downstream
figure the study recorded for that step, with the classical baselines beside them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from eegfm.evaluation.statistics import paired_comparison
from eegfm.models import create_model
from eegfm.shards import read_manifest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pretrain_study as study  # noqa: E402  (the study's cells, corpora and objectives)


def corpus_hours(shard_dirs: list[Path]) -> dict[str, float]:
    """Hours of recording per shard directory."""
    return {d.name: sum(e.duration_s for e in read_manifest(d)) / 3600 for d in shard_dirs}


def downstream_table(rows: list[dict], cell: str, size: str, step: int) -> str:
    """The study's figures of ``cell`` at ``step`` and the baselines of its size, as Markdown."""
    versus = study.versus_random(rows)
    lines = ["| read-out | model | balanced accuracy | − random init (95 % CI), Wilcoxon p |",
             "|---|---|---|---|"]
    for r in rows:
        if r["cell"] == cell and r["step"] == step and r["model"].startswith("pretrained"):
            lines.append(f"| {r['mode']} | {r['model']} | {study.mean(r['per_subject']):.3f} | "
                         f"{versus(r)} |")
    for r in rows:
        if r["size"] == size and r["step"] == 0:
            lines.append(f"| {r['mode']} | {r['model']} | {study.mean(r['per_subject']):.3f} | "
                         "|")
    return "\n".join(lines)


def higher_probes(rows: list[dict], probe: dict[str, float]) -> str:
    """A sentence naming the study's cell/steps whose frozen probe (``probe-lr``) is above
    ``probe`` both unaligned and aligned."""
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if r["mode"] == "probe-lr" and r["model"].startswith("pretrained"):
            scores.setdefault((r["cell"], r["step"]), {})[r["model"]] = study.mean(r["per_subject"])
    higher = [f"`{cell}` at step {step:,} ({s['pretrained']:.3f} / "
              f"{s['pretrained (aligned)']:.3f})" for (cell, step), s in scores.items()
              if len(s) == 2 and all(s[m] > probe.get(m, float("inf")) for m in s)]
    of = f"Of the {len(scores)} cells and steps the study has scored this way,"
    if not higher:
        return f"{of} none is higher both ways."
    verb = "scores" if len(higher) == 1 else "score"
    return (f"{of} {len(higher)} {verb} higher both ways: {', '.join(higher)}; see "
            "docs/benchmarks.md, \"Pretraining study\".")


def against_best(rows: list[dict], size: str, probe_rows: dict[str, dict[str, float]],
                 aligned: bool) -> str:
    """The probe against the best classical baseline of its alignment: "unaligned 0.731 vs
    0.711 (met; +0.020, Wilcoxon p 0.98)"."""
    best = max((r for r in rows if r["size"] == size and r["step"] == 0
                and r["model"].startswith(("band", "tangent"))
                and r["model"].endswith("(aligned)") == aligned),
               key=lambda r: study.mean(r["per_subject"]))
    ours = probe_rows.get("pretrained (aligned)" if aligned else "pretrained")
    label, theirs = "aligned" if aligned else "unaligned", study.mean(best["per_subject"])
    if ours is None:
        return f"{label}: no probe-lr figure vs {theirs:.3f}"
    paired = paired_comparison(ours, best["per_subject"])
    met = "met" if study.mean(ours) >= theirs else "not met"
    return (f"{label} {study.mean(ours):.3f} vs {theirs:.3f} ({met}; "
            f"{paired['mean_difference']:+.3f}, Wilcoxon p {paired['wilcoxon_p']:.2g})")


CARD = """---
library_name: eegfm
license: bsd-3-clause
tags: [eeg, eegfm, foundation-model]
---

# {name}: eegfm encoder pretrained on {corpus_text}

A spatially guided EEG transformer (`{size}`, {n_params:,} parameters) whose electrode
embedding is computed from 3-D electrode positions, so it reads any montage. Masked
pretraining with neuro-statistics targets (issue #15, `docs/pretrain.md`).

```python
import eegfm
encoder = eegfm.from_pretrained("weights/{name}")   # or create_model("{name}", pretrained=True)
```

    eegfm finetune --config configs/finetune/eegmat.yaml --data SHARDS --checkpoint weights/{name}
    eegfm demo --source ../shared/eeg/eegmat --pretrained weights/{name}

## Pretraining

- data: {data_text} ({hours:.1f} h in all, prepped with the default `eegfm prep`)
- steps: {step:,} (of a {steps:,}-step cosine schedule), batch 8 windows of 4 s, on a 2-core CPU
- objective: masked reconstruction{objective_text}
- input: µV at 200 Hz, electrode positions in metres; {scaling}
- command: `{command}`
- study cell: `{cell}` of `benchmarks/pretrain_study.py` (`docs/benchmarks.md`, "Pretraining
  study")

## Downstream (eegmat rest vs mental arithmetic, 24 subjects, subject-grouped 5-fold)

Balanced accuracy, mean over subjects; *aligned*: Euclidean alignment of each subject's windows
(covariance re-centring for tangent space, per-subject standardisation of band powers).
`probe-lr`: frozen encoder, the linear head solved as logistic regression with C picked on the
validation subjects (`--probe logistic`, the classical baselines' classifier); `probe`: the
same head trained by the fine-tuning loop; `full`: every weight fine-tuned with an
attention-pool head; `lpft`: every weight fine-tuned from the probe solved on the training
subjects, early stopping on the validation subjects (which may keep the probe); `lpft-refit`:
the same, then refit on training + validation subjects for the epochs each fold selected. Paired
over subjects against the same architecture from random initialisation (where it was run).

{table}

{verdict} This encoder was picked among the study's cells by these same
5-fold scores: a mild selection on the figures it reports. {higher}

The subjects of eegmat in `../shared` (00–23) are the ones pretraining saw, unlabelled: these
figures measure what pretraining on a cohort does for decoding that cohort's held-out subjects,
not transfer to people the encoder never saw.
"""


def main() -> None:
    """Write the released folder and its card."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=Path("runs/study"))
    parser.add_argument("--records", type=Path, default=study.RECORDS,
                        help="the study's measurements file (default: %(default)s)")
    parser.add_argument("--cell", required=True, help="a study cell, e.g. tiny-eegmat-all-12000")
    parser.add_argument("--step", type=int, required=True, help="the cell's checkpoint step")
    parser.add_argument("--name", required=True, help="registry name, e.g. eegfm_tiny")
    parser.add_argument("--out", type=Path, default=REPO / "eegfm" / "weights")
    args = parser.parse_args()

    parts = args.cell.split("-")
    steps = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    cells = {c.name: c for c in study.grid(steps, (args.step,))} if steps else {}
    if args.cell not in cells:
        sys.exit(f"release_encoder: unknown cell {args.cell!r}")
    cell = cells[args.cell]
    source = args.study / "encoders" / cell.name / str(args.step)
    if not (source / "config.json").is_file():
        sys.exit(f"release_encoder: {source}: no encoder of that step (run the study first)")
    encoder = create_model(args.name, checkpoint_path=source,
                           **study.SCALINGS[cell.scaling])  # checks the architecture
    rows = study.recorded(args.records)
    corpus = study.CORPORA[cell.corpus]
    hours = corpus_hours([args.study / "shards" / c for c in corpus])
    objective = study.OBJECTIVES[cell.objective]
    scaling = encoder.preprocessing["scaling"]
    command = shlex.join(["eegfm", "pretrain", "--config", "configs/pretrain/tiny.yaml",
                          "--data", *(f"SHARDS/{c}" for c in corpus),
                          "--trainer.max_steps", str(cell.steps), *study.model_options(cell)])
    probe_rows = {r["model"]: r["per_subject"] for r in rows
                  if r["cell"] == cell.name and r["step"] == args.step and r["mode"] == "probe-lr"}
    probe = {model: study.mean(per_subject) for model, per_subject in probe_rows.items()}
    verdict = "Against the best classical baseline of the same report (frozen `probe-lr`; " \
        "paired over subjects): " + "; ".join(
            against_best(rows, cell.size, probe_rows, aligned) for aligned in (False, True)) + "."
    figures: dict[str, dict[str, float]] = {}  # what tests/models/test_released_weights.py reruns
    for r in rows:
        if (r["cell"] == cell.name and r["step"] == args.step) or (
                r["size"] == cell.size and r["step"] == 0):
            figures.setdefault(r["mode"], {})[r["model"]] = round(study.mean(r["per_subject"]), 4)
    folder = args.out / args.name
    encoder.save_pretrained(folder, half=None, extra={
        "study_cell": cell.name, "global_step": args.step, "corpus": corpus,
        "corpus_hours": {k: round(v, 2) for k, v in hours.items()}, "objective": objective,
        "command": command, "eegmat_5fold_balanced_accuracy": figures})
    card = CARD.format(
        name=args.name, size=args.name, n_params=sum(p.numel() for p in encoder.parameters()),
        corpus_text=" + ".join(corpus), hours=sum(hours.values()),
        data_text=", ".join(f"{k} {v:.1f} h" for k, v in hours.items()),
        step=args.step, steps=cell.steps, cell=cell.name, command=command, scaling=scaling,
        objective_text="".join(f" + {k.removesuffix('_weight')} (weight {v})"
                               for k, v in objective.items()),
        table=downstream_table(rows, cell.name, cell.size, args.step), verdict=verdict,
        higher=higher_probes(rows, probe))
    (folder / "README.md").write_text(card)
    print(f"released {folder} ({sum(hours.values()):.1f} h, step {args.step})")
    print(verdict)


if __name__ == "__main__":
    main()

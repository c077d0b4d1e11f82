"""The pretraining study of issue #15: does pretraining make eegmat decoding better, and why?

    python benchmarks/pretrain_study.py --out runs/study                 # run (or resume) it
    python benchmarks/pretrain_study.py --out runs/study --cells tiny-eegmat-recon-4000
    python benchmarks/pretrain_study.py --out runs/study --report        # table + plot only
    python benchmarks/pretrain_study.py --compare \
        small-eegmat-all-12000-lr1e-3@12000@lpft-wise@pretrained \
        small-eegmat-all-12000-lr1e-3@12000@probe-lr@pretrained    # one paired difference

Each cell is one pretraining run (`eegfm pretrain`): an encoder size, an objective
(reconstruction only, + band power, + connectivity, all), a corpus (eegmat alone, or eegmat +
muse + the device files in one run) and an input scaling (`channel`: each channel its own
robust scale, the default; `window`: one per window; `noamp`: per channel, without the
log-amplitude embedding; `fixed`: 10 µV for every channel). Its step checkpoints are kept,
and at each evaluation step the encoder is scored downstream on eegmat rest vs arithmetic,
subject-grouped 5-fold
(`configs/finetune/eegmat.yaml`), unaligned and subject-aligned: two frozen linear probes at
every evaluation step (`probe`: the head trained by the fine-tuning loop; `probe-lr`: the head
solved as the classical baselines' logistic regression, `--probe logistic`), full fine-tuning
at the last (`full`: attention-pool head; `lpft`: every weight fine-tuned from the solved
probe, LP-FT; `lpft-refit`: the same, then refit on training + validation subjects for the
epochs selected, `--refit true`). The same-architecture encoder from random initialisation
(step 0) and the classical baselines (log band power + LR, tangent space + LR) are scored once
per size on the same splits (a cell of another input scaling scores its own random
initialisation); every pretrained score is compared with random initialisation, paired over the
24 subjects.

Everything resumes: prep and pretraining resume by themselves, and each finished downstream
run is a `results.json` that a rerun reuses. Every finished measurement is appended at once to
the records file (`--records`, default `benchmarks/results/pretrain_study.jsonl`: in the
repository, so the per-subject scores behind docs/benchmarks.md are committed and survive a new
checkout, where `OUT` is not kept), so a run stopped at any point keeps what it measured;
`--report` (also run at the end) writes `OUT/study.md`, `OUT/study-summary.md` and
`OUT/study.png` from that file. A cell whose encoders are already in `OUT/encoders/CELL/STEP/`
(a model folder, e.g. a released one copied there) is not pretrained again, and
`--random-init false` scores a cell's read-outs without first scoring its size's random
initialisation in them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eegfm.evaluation.statistics import paired_comparison
from eegfm.models import create_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EEGFM_SHARED_EEG", REPO.parent / "shared" / "eeg"))
CONFIG = {"tiny": REPO / "configs/pretrain/tiny.yaml", "small": REPO / "configs/pretrain/tiny.yaml"}
TASK = REPO / "configs" / "finetune" / "eegmat.yaml"
RECORDS = REPO / "benchmarks" / "results" / "pretrain_study.jsonl"
# the pretrainer options each objective sets (targets: docs/pretrain.md); weight 0.1, as at 1.0
# the targets stall reconstruction in a short run (docs/pretrain.md, "Neuro-statistics targets")
OBJECTIVES = {
    "recon": {},
    "bandpower": {"bandpower_weight": 0.1},
    "connectivity": {"connectivity_weight": 0.1},
    "all": {"bandpower_weight": 0.1, "connectivity_weight": 0.1},
}
CORPORA = {"eegmat": ["eegmat"], "mixed": ["eegmat", "muse", "formats"]}
# input scalings: the encoder options of each (docs/models.md, "Inputs")
SCALINGS = {"channel": {}, "window": {"input_scaling": "window"},
            "noamp": {"amplitude_embedding": False}, "fixed": {"input_scaling": "fixed"}}
# the downstream read-outs: `eegfm finetune` options of each
MODES = {"probe": ["--probe", "gradient"], "probe-lr": ["--probe", "logistic"],
         "full": ["--head", "mlp", "--freeze", "false", "--probe", "gradient",
                  "--train.lr", "1e-3"],
         "lpft": ["--head", "linear", "--freeze", "false", "--probe", "logistic",
                  "--train.lr", "1e-3"],
         "lpft-refit": ["--head", "linear", "--freeze", "false", "--probe", "logistic",
                        "--train.lr", "1e-3", "--refit", "true"],
         # WiSE-FT's default mixing weight, fixed before any run (no held-out data to pick it on)
         "lpft-wise": ["--head", "linear", "--freeze", "false", "--probe", "logistic",
                       "--train.lr", "1e-3", "--wise", "0.5"]}
# read-outs that fine-tune the encoder: scored at a cell's last step
FINAL = ("full", "lpft", "lpft-refit", "lpft-wise")
ALIGN = "none,euclidean"
QUICK: list[str] = []  # --quick: one fold, two epochs (checks the pipeline, measures nothing)


@dataclass(frozen=True)
class Cell:
    """One pretraining run of the study."""

    size: str
    corpus: str
    objective: str
    steps: int
    eval_steps: tuple[int, ...]
    scaling: str = "channel"
    lr: float | None = None  # the pretraining peak learning rate; None: the config's (2e-3)
    seed: int = 0  # the pretraining run's seed (`seed_everything`)

    @property
    def name(self) -> str:
        """The cell's folder name, e.g. ``tiny-mixed-all-4000`` (the length is part of it: a
        run's learning-rate schedule is fixed at its first start)."""
        suffix = "" if self.scaling == "channel" else f"-{self.scaling}"
        suffix += "" if self.lr is None else f"-lr{self.lr_text}"
        suffix += "" if self.seed == 0 else f"-seed{self.seed}"
        return f"{self.size}-{self.corpus}-{self.objective}-{self.steps}{suffix}"

    @property
    def lr_text(self) -> str:
        """The learning rate as written in names and on the command line, e.g. ``1e-3``."""
        return f"{self.lr:.0e}".replace("e-0", "e-")


def grid(long_steps: int, eval_steps: tuple[int, ...]) -> list[Cell]:
    """Every cell, most informative first (a time-limited session runs a prefix of it)."""
    evals = tuple(sorted({*(s for s in eval_steps if s < long_steps), long_steps}))
    order = [("tiny", "eegmat", "recon"), ("tiny", "mixed", "recon"), ("tiny", "mixed", "all"),
             ("tiny", "mixed", "bandpower"), ("tiny", "mixed", "connectivity"),
             ("tiny", "eegmat", "all"), ("small", "mixed", "recon"), ("small", "mixed", "all"),
             ("small", "eegmat", "all")]
    cells = [Cell(size, corpus, objective, long_steps, evals) for size, corpus, objective in order]
    cells += [Cell("tiny", "eegmat", "all", long_steps, evals, scaling)
              for scaling in SCALINGS if scaling != "channel"]
    # the larger encoder at half the tiny config's learning rate, that run with another seed,
    # and the same recipe on the mixed-device corpus
    return [*cells, *(Cell("small", "eegmat", "all", long_steps, evals, lr=1e-3, seed=seed)
                      for seed in (0, 1)),
            Cell("small", "mixed", "all", long_steps, evals, lr=1e-3)]


def record(records: Path, row: dict) -> None:
    """Append one finished measurement to the records file (flushed and synced)."""
    records.parent.mkdir(parents=True, exist_ok=True)
    with open(records, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def recorded(path: Path) -> list[dict]:
    """Every measurement recorded so far in the records file ``path``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []


def run(command: list[str], log: Path) -> None:
    """Run one eegfm command, its output appended to `log`; stop the study if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"pretrain_study: `{' '.join(command[:4])} ...` failed (exit {code}); see {log}")
    print(f"  {' '.join(command[2:4])}: {time.monotonic() - started:.0f} s", flush=True)


def eegfm(*args: str) -> list[str]:
    """The `eegfm` command line in this interpreter."""
    return [sys.executable, "-m", "eegfm", *args]


def prep(out: Path, sources: set[str]) -> dict[str, Path]:
    """Shards of each source (prep resumes: recordings already converted are skipped); the
    sources not asked for are not converted."""
    shards = {}
    for name in ("eegmat", "muse", "formats"):
        shards[name] = out / "shards" / name
        if name in sources and not (shards[name] / "manifest.jsonl").is_file():
            run(eegfm("prep", str(SHARED / name), "--out", str(shards[name]), "--no-progress"),
                out / "logs" / "prep.log")
    return shards


def pretrain(cell: Cell, shards: dict[str, Path], out: Path) -> Path:
    """Run (or resume) the cell's pretraining, keeping a checkpoint at every evaluation step."""
    run_dir = out / "runs" / cell.name
    every = np.gcd.reduce(cell.eval_steps)
    run(eegfm("pretrain", "--config", str(CONFIG[cell.size]),
              "--data", *[str(shards[c]) for c in CORPORA[cell.corpus]],
              "--run_dir", str(run_dir), "--trainer.max_steps", str(cell.steps),
              "--trainer.enable_progress_bar", "false",
              "--checkpoint.every_n_train_steps", str(every), "--checkpoint.save_top_k", "-1",
              *model_options(cell)),
        out / "logs" / f"pretrain-{cell.name}.log")  # fmt: skip
    return run_dir


def model_options(cell: Cell) -> list[str]:
    """The `eegfm pretrain` model options of the cell (on top of its size's config)."""
    options = ["--model.encoder", f"eegfm_{cell.size}"] if cell.size != "tiny" else []
    if SCALINGS[cell.scaling]:
        options += ["--model.encoder_overrides", json.dumps(SCALINGS[cell.scaling])]
    options += [f"--model.pretrainer.{k}={v}" for k, v in OBJECTIVES[cell.objective].items()]
    options += [] if cell.lr is None else ["--model.lr", cell.lr_text]
    return options + ([] if cell.seed == 0 else ["--seed_everything", str(cell.seed)])


def encoder_at(run_dir: Path, step: int, folder: Path) -> Path:
    """The encoder of the run's step checkpoint, as a model folder."""
    if (folder / "config.json").is_file():
        return folder
    ckpt = torch.load(run_dir / "checkpoints" / f"step={step:08d}.ckpt", map_location="cpu",
                      weights_only=True)
    hparams = ckpt["hyper_parameters"]
    encoder = create_model(hparams["encoder"], **(hparams.get("encoder_overrides") or {}))
    prefix = "pretrainer.encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
                             if k.startswith(prefix)})
    encoder.save_pretrained(folder, extra={"global_step": step, "run": run_dir.name})
    return folder


def weights_dtype(folder: Path) -> str:
    """The dtype the model folder stores its weights in (a released encoder: float16)."""
    return json.loads((folder / "config.json").read_text()).get("weights_dtype", "float32")


def downstream(out: Path, shards: dict[str, Path], tag: str, models: str,
               checkpoint: Path | None, mode: str) -> dict:
    """One `eegfm finetune` run on eegmat (reused when its results.json exists)."""
    folder = out / "downstream" / tag
    if not (folder / "results.json").is_file():
        head = MODES[mode]
        ckpt = ["--checkpoint", str(checkpoint)] if checkpoint is not None else []
        run(eegfm("finetune", "--config", str(TASK), "--data", str(shards["eegmat"]),
                  "--models", f"[{models}]", "--align", f"[{ALIGN}]", "--out", str(folder),
                  "--save_model", "false", "--progress", "false", *ckpt, *head, *QUICK),
            out / "logs" / f"finetune-{tag}.log")  # fmt: skip
    return json.loads((folder / "results.json").read_text())


def scores(results: dict) -> Iterator[tuple[str, dict[str, float]]]:
    """(model name, {subject: balanced accuracy}) of a results.json."""
    for name, entry in results["models"].items():
        yield name, {s: v.get("balanced_accuracy") for s, v in entry["per_subject"].items()}


def needed_steps(cell: Cell, modes: list[str]) -> list[int]:
    """The cell's steps that ``modes`` score (the fine-tuning read-outs only the last)."""
    return [s for s in cell.eval_steps
            if any(m not in FINAL or s == cell.steps for m in modes)]


def has_encoders(out: Path, cell: Cell, modes: list[str]) -> bool:
    """Whether every encoder the cell's read-outs need is already a model folder."""
    return all((out / "encoders" / cell.name / str(s) / "config.json").is_file()
               for s in needed_steps(cell, modes))


def measure(out: Path, cells: list[Cell], shards: dict[str, Path], modes: list[str],
            records: Path, random_init: bool = True) -> None:
    """Run every cell not yet measured in ``modes``, recording each result in ``records`` as
    soon as it exists (``random_init`` false: not the random-init baselines first)."""
    done = {(r["cell"], r["step"], r["mode"], r["model"]) for r in recorded(records)}
    for size in sorted({c.size for c in cells}) if random_init else []:
        checkpoint = None
        if size != "tiny":  # random_init copies the architecture of the checkpoint it is given
            checkpoint = out / "encoders" / f"{size}-random"
            if not (checkpoint / "config.json").is_file():
                torch.manual_seed(0)
                create_model(f"eegfm_{size}").save_pretrained(checkpoint)
        for mode in modes:
            key = f"{size}-baselines-{mode}"
            models = "random_init,bandpower_lr,tangent_lr" if mode == "probe" else "random_init"
            if (key, 0, mode, "random_init") in done:
                continue
            results = downstream(out, shards, key, models, checkpoint, mode)
            for model, per_subject in scores(results):
                record(records, {"cell": key, "size": size, "step": 0, "mode": mode,
                                 "model": model, "per_subject": per_subject})
    for cell in cells:
        run_dir = out / "runs" / cell.name
        if not has_encoders(out, cell, modes):
            print(f"{cell.name}: pretraining to step {cell.steps}", flush=True)
            pretrain(cell, shards, out)
        for step in cell.eval_steps:
            for mode in modes:
                if ((mode in FINAL and step != cell.steps)
                        or (cell.name, step, mode, "pretrained") in done):
                    continue
                encoder = encoder_at(run_dir, step, out / "encoders" / cell.name / f"{step}")
                models = "pretrained" if cell.scaling == "channel" else "pretrained,random_init"
                results = downstream(out, shards, f"{cell.name}-{step}-{mode}", models,
                                     encoder, mode)
                for model, per_subject in scores(results):
                    record(records, {"cell": cell.name, "size": cell.size,
                                     "corpus": cell.corpus, "objective": cell.objective,
                                     "step": step, "mode": mode, "model": model,
                                     "per_subject": per_subject,
                                     "weights_dtype": weights_dtype(encoder)})


def mean(per_subject: dict[str, float]) -> float:
    """Mean over subjects of the finite scores."""
    values = [v for v in per_subject.values() if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def versus_random(rows: list[dict]) -> Callable[[dict], str]:
    """``text(row)``: a pretrained row minus its random initialisation, paired over subjects
    ("+d (CI low, CI high), Wilcoxon p"; empty for other rows). The reference is the cell's
    own random init at that step (another input scaling) where it has one, else its size's."""
    random = {(r["size"], r["mode"], r["model"].replace("random_init", "")): r["per_subject"]
              for r in rows if r["model"].startswith("random_init") and r["step"] == 0}
    own = {(r["cell"], r["step"], r["mode"], r["model"].replace("random_init", "")):
           r["per_subject"] for r in rows if r["model"].startswith("random_init") and r["step"]}

    def text(r: dict) -> str:
        if not r["model"].startswith("pretrained"):
            return ""
        suffix = r["model"].removeprefix("pretrained")
        ref = own.get((r["cell"], r["step"], r["mode"], suffix),
                      random.get((r["size"], r["mode"], suffix)))
        c = paired_comparison(r["per_subject"], ref) if ref is not None else None
        if c is None or c["mean_difference"] is None:
            return ""
        return (f"{c['mean_difference']:+.3f} ({c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}), "
                f"{c['wilcoxon_p']:.3g}")

    return text


def compare(rows: list[dict], first: str, second: str) -> str:
    """``first`` minus ``second``, each ``CELL@STEP@MODE@MODEL`` of the records, paired over
    subjects: one line of mean difference, bootstrap 95 % CI, Wilcoxon p, wins / losses."""
    def find(key: str) -> dict[str, float]:
        cell, step, mode, model = key.split("@")
        found = [r["per_subject"] for r in rows if (r["cell"], str(r["step"]), r["mode"],
                                                    r["model"]) == (cell, step, mode, model)]
        if not found:
            sys.exit(f"pretrain_study: {key!r} is not in the records")
        return found[-1]

    a, b = find(first), find(second)
    c = paired_comparison(a, b)
    return (f"{first} ({mean(a):.3f}) - {second} ({mean(b):.3f}): "
            f"{c['mean_difference']:+.3f} (95 % CI {c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}), "
            f"Wilcoxon p {c['wilcoxon_p']:.2g}, {c['wins']} wins / {c['losses']} losses "
            f"of {c['n']} subjects")


def report(out: Path, records: Path) -> str:
    """OUT/study.md (table by cell and step, paired statistics against random init),
    OUT/study-summary.md and OUT/study.png, from the records file."""
    rows = recorded(records)
    versus = versus_random(rows)
    lines = ["| cell | step | mode | model | balanced accuracy | − random init (95 % CI), p |",
             "|---|---|---|---|---|---|"]
    order = {cell: i for i, cell in enumerate(dict.fromkeys(r["cell"] for r in rows))}
    for r in sorted(rows, key=lambda r: (order[r["cell"]], r["step"])):  # stable: mode order kept
        lines.append(f"| {r['cell']} | {r['step']} | {r['mode']} | {r['model']} | "
                     f"{mean(r['per_subject']):.3f} | {versus(r)} |")
    table = "\n".join(lines) + "\n"
    (out / "study.md").write_text(table)
    (out / "study-summary.md").write_text(summary(rows))
    _plot(rows, out / "study.png")
    return table


def summary(rows: list[dict]) -> str:
    """One line per cell at its last step: every read-out, unaligned / aligned (Markdown)."""
    columns = [m for m in MODES if any(r["mode"] == m for r in rows)]
    lines = ["| cell | step | " + " | ".join(f"{m} U / A" for m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    cells = dict.fromkeys(r["cell"] for r in rows)
    for cell in cells:
        own = [r for r in rows if r["cell"] == cell]
        step = max(r["step"] for r in own)
        for model in dict.fromkeys(r["model"].removesuffix(" (aligned)") for r in own
                                   if r["step"] == step):
            figures = []
            for mode in columns:
                pair = [mean(r["per_subject"]) for suffix in ("", " (aligned)") for r in own
                        if r["step"] == step and r["mode"] == mode
                        and r["model"] == model + suffix]
                figures.append(" / ".join(f"{v:.3f}" for v in pair) if pair else "")
            if any(figures):
                label = cell if model == "pretrained" else f"{cell}: {model}"
                lines.append(f"| {label} | {step} | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    """Frozen-probe balanced accuracy against pretraining steps, one line per cell; one row of
    panels per probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = [m for m in MODES if m not in FINAL and any(r["mode"] == m for r in rows)]
    fig, grid = plt.subplots(len(probes), 2, figsize=(11, 4 * len(probes)), sharey=True,
                             squeeze=False)
    for axes, probe in zip(grid, probes, strict=True):
        _plot_probe(rows, probe, axes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_probe(rows: list[dict], probe: str, axes) -> None:
    """The unaligned and aligned panels of one probe: a colour per cell, dashed for small."""
    import matplotlib

    cells = sorted({r["cell"] for r in rows if r.get("objective")})
    palette = matplotlib.colormaps["tab20"]
    colour = {cell: palette(i % palette.N) for i, cell in enumerate(cells)}
    for ax, aligned in zip(axes, (False, True), strict=True):
        for size in sorted({r["size"] for r in rows}):
            base = [r for r in rows if r["size"] == size and r["mode"] == probe
                    and r["model"] == ("random_init (aligned)" if aligned else "random_init")]
            for cell in sorted({r["cell"] for r in rows if r.get("objective")
                                and r["size"] == size}):
                mine = [r for r in rows if r["cell"] == cell and r["mode"] == probe
                        and r["model"].endswith("(aligned)") == aligned]
                points = sorted((r["step"], mean(r["per_subject"])) for r in mine
                                if r["model"].startswith("pretrained"))
                start = [r for r in mine if r["model"].startswith("random_init")] or base
                if start:  # none when the random init was not scored (--random-init false)
                    points = [(0, mean(start[0]["per_subject"])), *points]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=cell,
                            color=colour[cell], ls="--" if size == "small" else "-")
            for r in rows:
                if (r["size"] == size and r["step"] == 0 and r["mode"] == "probe"
                        and r["model"].startswith(("band", "tangent"))
                        and r["model"].endswith("(aligned)") == aligned):
                    ax.axhline(mean(r["per_subject"]), ls="--", lw=1, color="grey")
                    ax.annotate(r["model"], (0, mean(r["per_subject"])), fontsize=7)
        ax.set_title(f"{probe}, " + ("subject-aligned" if aligned else "unaligned"))
        ax.set_xlabel("pretraining steps")
    axes[0].set_ylabel(f"eegmat balanced accuracy ({probe}, 5-fold)")
    axes[1].legend(fontsize=7)


def main() -> None:
    """Run or resume the study, then write its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--records", type=Path, default=RECORDS,
                        help="the measurements file, appended to (default: %(default)s)")
    parser.add_argument("--random-init", choices=("true", "false"), default="true",
                        help="score each size's random initialisation in the read-outs first")
    parser.add_argument("--cells", help="comma-separated cell names (default: every cell, "
                                        "in order)")
    parser.add_argument("--long-steps", type=int, default=4000,
                        help="pretraining steps of every cell (its last evaluation step)")
    parser.add_argument("--eval-steps", default="500,2000",
                        help="earlier steps scored by the frozen probe (comma-separated)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"downstream read-outs to run (comma-separated, of {list(MODES)})")
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="only print A minus B paired over subjects, each "
                             "CELL@STEP@MODE@MODEL of the records")
    parser.add_argument("--quick", action="store_true",
                        help="one fold and two epochs downstream: a check of the pipeline")
    args = parser.parse_args()
    if args.quick:
        QUICK[:] = ["--max_folds", "1", "--train.epochs", "2"]
    if args.compare:
        print(compare(recorded(args.records), *args.compare))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        cells = grid(args.long_steps, tuple(int(s) for s in args.eval_steps.split(",")))
        if args.cells:
            wanted = args.cells.split(",")
            unknown = sorted(set(wanted) - {c.name for c in cells})
            if unknown:
                sys.exit(f"pretrain_study: unknown cells {unknown}; "
                         f"known: {[c.name for c in cells]}")
            by_name = {c.name: c for c in cells}
            cells = [by_name[name] for name in wanted]  # in the order asked for
        modes = args.modes.split(",")
        if not modes or set(modes) - set(MODES):
            sys.exit(f"pretrain_study: --modes takes {list(MODES)}, got {args.modes!r}")
        sources = {"eegmat"}.union(*(CORPORA[c.corpus] for c in cells
                                     if not has_encoders(args.out, c, modes)))
        measure(args.out, cells, prep(args.out, sources), modes, args.records,
                args.random_init == "true")
    print(report(args.out, args.records))


if __name__ == "__main__":
    main()

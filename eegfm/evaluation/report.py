"""Write an evaluation report: ``results.json``, ``results.md``, ``per_subject.csv`` and PNGs.

The input schema lives in :mod:`eegfm.evaluation.schema` and ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eegfm.evaluation.metrics import METRIC_LABELS, aggregate
from eegfm.evaluation.plots import (
    plot_confusion_matrix,
    plot_heatmap,
    plot_learning_curves,
    plot_paired,
    plot_per_subject,
)
from eegfm.evaluation.schema import HEADLINE_METRIC, SCHEMA, to_json_safe, validate_results

METRIC_FORMAT = "{:.3f}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _fmt(value: Any, float_format: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return float_format.format(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt_summary(stats: Mapping[str, float], n_subjects: int) -> str:
    if stats["n"] == 0:
        return "n/a"
    text = f"{stats['mean']:.3f}"
    if not math.isnan(stats["std"]):
        text += f" ± {stats['std']:.3f}"
    if stats["n"] < n_subjects:
        text += f" (n={stats['n']})"  # some subjects undefined (e.g. AUROC on one class)
    return text


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
              float_format: str = "{:.4g}") -> list[str]:
    lines = ["| " + " | ".join(_fmt(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v, float_format) for v in row) + " |" for row in rows]
    return lines


def _dict_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown table from a list of dicts; columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    if not columns:
        return ["(empty table)"]
    as_text = [{str(k): v for k, v in row.items()} for row in rows]
    return _md_table(columns, [[row.get(c, "") for c in columns] for row in as_text])


def _subject_order(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    subjects: list[str] = []
    for entry in models.values():
        subjects += [str(s) for s in entry["per_subject"] if str(s) not in subjects]
    return subjects


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary name and rename, so a partial file never looks complete."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _extras_sections(extras: Mapping[str, Any], level: str, figures: Mapping[str, Path],
                     key_prefix: str) -> list[str]:
    lines: list[str] = []
    for name, extra in extras.items():
        lines += ["", f"{level} {name}", ""]
        if isinstance(extra, (list, tuple)):
            lines += _dict_table(extra)
        elif f"{key_prefix}{name}" in figures:
            lines.append(f"![{name}]({figures[key_prefix + name].name})")
        else:
            lines.append("```json")
            lines.append(json.dumps(to_json_safe(extra), indent=2))
            lines.append("```")
    return lines


def _markdown(results: Mapping[str, Any], summaries: Mapping[str, Any],
              figures: Mapping[str, Path]) -> str:
    models = results["models"]
    title = results.get("task") or "evaluation"
    subjects = _subject_order(models)
    lines = [f"# Results: {title}", "",
             f"protocol `{results['protocol']}`, seed {results['seed']}, "
             f"{len(subjects)} test subjects, classes {', '.join(results['class_names'])}. "
             "Cells: mean ± std (ddof=1) across test subjects; (n=…) where a metric is "
             "undefined for some subjects.", ""]
    metrics: list[str] = []
    for summary in summaries.values():
        metrics += [m for m in summary if m not in metrics]
    rows = []
    for model, summary in summaries.items():
        n_subjects = len(models[model]["per_subject"])
        rows.append([model, n_subjects] + [
            _fmt_summary(summary[m], n_subjects) if m in summary else "n/a" for m in metrics])
    lines += _md_table(["model", "n subjects"] + [METRIC_LABELS.get(m, m) for m in metrics],
                       rows)
    lines += ["", f"## Per test subject ({METRIC_LABELS[HEADLINE_METRIC]})", ""]
    per_subject = {m: {str(s): v for s, v in e["per_subject"].items()} for m, e in models.items()}
    lines += _md_table(["subject", *models], [
        [s] + [per_subject[m].get(s, {}).get(HEADLINE_METRIC) for m in models]
        for s in subjects], METRIC_FORMAT)
    for model, entry in models.items():
        lines += ["", f"<details><summary>{model}: all metrics per subject</summary>", ""]
        model_metrics = list(summaries[model])
        lines += _md_table(["subject"] + [METRIC_LABELS.get(m, m) for m in model_metrics],
                           [[str(s)] + [scores.get(m) for m in model_metrics]
                            for s, scores in entry["per_subject"].items()], METRIC_FORMAT)
        lines += ["", "</details>"]
    if "statistics" in results:
        lines += _statistics_section(results["statistics"], figures)
    info_rows = [{"model": m, **e["info"]} for m, e in models.items() if e.get("info")]
    if info_rows:
        lines += ["", "## Models", "", *_dict_table(info_rows)]
    notes = [f"- {n}" for n in results.get("notes", [])]
    for model, entry in models.items():
        for subject, subject_notes in entry.get("subject_notes", {}).items():
            notes += [f"- {model}, subject {subject}: {n}" for n in subject_notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += _extras_sections(results.get("extras", {}), "##", figures, "heatmap:")
    for model, entry in models.items():
        lines += _extras_sections(entry.get("extras", {}), f"## {model}:", figures,
                                  f"heatmap:{model}/")
    plots = [(k, p) for k, p in figures.items()
             if not k.startswith("heatmap:") and k != "paired"]
    if plots:
        lines += ["", "## Figures", ""] + [f"![{k}]({p.name})" for k, p in plots]
    return "\n".join(lines) + "\n"


def _statistics_section(statistics: Mapping[str, Any], figures: Mapping[str, Path]
                        ) -> list[str]:
    """Paired comparisons with the reference model (every pair is in results.json)."""
    reference = statistics["reference"]
    label = METRIC_LABELS.get(statistics["metric"], statistics["metric"])
    rows = []
    for pair in statistics["pairs"]:
        if reference not in (pair["model"], pair["versus"]):
            continue
        sign = 1 if pair["versus"] == reference else -1
        other = pair["model"] if sign == 1 else pair["versus"]
        ci = pair["ci95"]
        rows.append([other, pair["n"],
                     None if pair["mean_difference"] is None else sign * pair["mean_difference"],
                     "n/a" if ci is None else
                     f"[{min(sign * ci[0], sign * ci[1]):+.3f}, "
                     f"{max(sign * ci[0], sign * ci[1]):+.3f}]",
                     f"{pair['wins'] if sign == 1 else pair['losses']}/"
                     f"{pair['losses'] if sign == 1 else pair['wins']}",
                     "n/a" if pair["wilcoxon_p"] is None else f"{pair['wilcoxon_p']:.3g}"])
    lines = ["", f"## Paired comparison with the best baseline ({reference})", "",
             f"{label}: model minus {reference}, paired over test subjects. "
             f"{statistics.get('test', '')}. Every pair of models is in results.json "
             "(`statistics.pairs`).", ""]
    lines += _md_table(["model", "n subjects", "mean difference", "95 % CI", "better/worse",
                        "Wilcoxon p"], rows, "{:+.3f}")
    if "paired" in figures:
        lines += ["", f"![paired]({figures['paired'].name})"]
    return lines


def _plot_heatmap_extras(extras: Mapping[str, Any], out_dir: Path, prefix: str,
                         key_prefix: str) -> dict[str, Path]:
    figures = {}
    for name, extra in extras.items():
        if isinstance(extra, Mapping) and "matrix" in extra:
            figures[f"{key_prefix}{name}"] = plot_heatmap(
                extra["matrix"], extra["row_labels"], extra["col_labels"],
                extra.get("title", name), out_dir / f"{prefix}heatmap_{_slug(name)}.png",
                colorbar_label=extra.get("colorbar_label", ""))
    return figures


def _check_slugs(models: Mapping[str, Any]) -> None:
    slugs: dict[str, str] = {}
    for model in models:
        if _slug(model) in slugs:
            raise ValueError(f"model names {slugs[_slug(model)]!r} and {model!r} map to the same "
                             f"file name {_slug(model)!r}; rename one")
        slugs[_slug(model)] = model


def write_report(results: dict, out_dir: os.PathLike | str) -> dict[str, Path]:
    """Validate ``results`` and write the report files into ``out_dir``.

    Returns the written paths: ``json``, ``markdown``, ``csv``, ``per_subject``, and per model
    ``confusion:<model>``, ``learning_curves:<model>`` (when given), plus ``heatmap:<name>`` /
    ``heatmap:<model>/<name>`` for heatmap extras.
    """
    validate_results(results)
    models = results["models"]
    _check_slugs(models)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # None is how results.json stores NaN; numbers as float from here on
    scores = {m: {str(s): {k: (math.nan if v is None else float(v)) for k, v in sc.items()}
                  for s, sc in e["per_subject"].items()}
              for m, e in models.items()}
    summaries = {m: aggregate(per_subject) for m, per_subject in scores.items()}
    figures: dict[str, Path] = {}
    figures["per_subject"] = plot_per_subject(
        {m: {s: sc[HEADLINE_METRIC] for s, sc in per_subject.items()}
         for m, per_subject in scores.items()},
        METRIC_LABELS[HEADLINE_METRIC], out_dir / "per_subject_balanced_accuracy.png",
        chance=1.0 / len(results["class_names"]))
    for model, entry in models.items():
        slug = _slug(model)
        if "confusion_matrix" in entry:
            figures[f"confusion:{model}"] = plot_confusion_matrix(
                entry["confusion_matrix"], results["class_names"],
                f"{model}: confusion (all test subjects)", out_dir / f"confusion_{slug}.png")
        if entry.get("learning_curves"):
            figures[f"learning_curves:{model}"] = plot_learning_curves(
                entry["learning_curves"], f"{model}: learning curves",
                out_dir / f"learning_curves_{slug}.png")
        figures.update(_plot_heatmap_extras(entry.get("extras", {}), out_dir, f"{slug}_",
                                            f"heatmap:{model}/"))
    figures.update(_plot_heatmap_extras(results.get("extras", {}), out_dir, "", "heatmap:"))
    if "statistics" in results:
        figures["paired"] = plot_paired(
            {m: {s: sc[HEADLINE_METRIC] for s, sc in per_subject.items()}
             for m, per_subject in scores.items()}, results["statistics"]["reference"],
            METRIC_LABELS[HEADLINE_METRIC], out_dir / "paired_balanced_accuracy.png",
            chance=1.0 / len(results["class_names"]))

    document = {"schema": SCHEMA,
                **{k: v for k, v in results.items() if k not in ("schema", "figures")}}
    document["models"] = {m: {**e, "summary": summaries[m]} for m, e in models.items()}
    document["figures"] = {k: p.name for k, p in figures.items()}
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md",
             "csv": out_dir / "per_subject.csv"}
    _write_text(paths["json"], json.dumps(to_json_safe(document), indent=2, allow_nan=False))
    _write_text(paths["markdown"], _markdown(results, summaries, figures))
    rows = [{"model": m, "subject": str(s), **sc}
            for m, e in models.items() for s, sc in e["per_subject"].items()]
    _write_text(paths["csv"], pd.DataFrame(rows).to_csv(index=False))
    return {**paths, **figures}

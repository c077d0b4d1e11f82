"""PNG figures for evaluation reports, drawn on matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` and ``FigureCanvasAgg`` instead of pyplot:
no global backend switch, no figure registry to leak, safe in headless jobs and threads.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: os.PathLike | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_heatmap(matrix: Any, row_labels: Sequence, col_labels: Sequence, title: str,
                 path: os.PathLike | str, *, cmap: str = "viridis", vmin: float | None = None,
                 vmax: float | None = None, colorbar_label: str = "",
                 annotate: bool | None = None, fmt: str = "{:.2f}") -> Path:
    """Matrix as a labelled heatmap PNG (e.g. routing weight per test subject × expert).

    ``annotate`` writes each value in its cell; by default only for matrices up to 20 × 20.
    NaN cells are left blank.
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"plot_heatmap: matrix must be 2-D, got shape {matrix.shape}")
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"plot_heatmap '{title}': matrix shape {matrix.shape} does not match "
            f"{len(row_labels)} row labels × {len(col_labels)} column labels"
        )
    n_rows, n_cols = matrix.shape
    width = max(4.0, 1.0 + 0.45 * n_cols)
    fig = _new_figure(width, max(3.0, 1.2 + 0.3 * n_rows))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), [str(c) for c in col_labels], rotation=45, ha="right")
    ax.set_yticks(range(n_rows), [str(r) for r in row_labels])
    # a long title on a narrow matrix would be clipped at the figure edge: wrap it instead
    ax.set_title(textwrap.fill(title, width=max(20, int(7 * width))))
    colorbar = fig.colorbar(image, ax=ax)
    if colorbar_label:
        colorbar.set_label(colorbar_label)
    if annotate if annotate is not None else max(n_rows, n_cols) <= 20:
        finite = matrix[np.isfinite(matrix)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                # dark text on the bright end of viridis-like maps, light text elsewhere
                color = "black" if value > middle else "white"
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                        color=color)
    return _save(fig, path)


def plot_confusion_matrix(counts: Any, class_names: Sequence[str], title: str,
                          path: os.PathLike | str) -> Path:
    """Confusion matrix PNG: colour = share of the true class (row), text = count and share."""
    counts = np.asarray(counts, dtype=float)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {k} classes")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    fig = _new_figure(max(5.0, 2.2 + 0.8 * k), max(3.6, 1.4 + 0.7 * k))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), n in np.ndenumerate(counts):
        text = f"{int(n)}" if np.isnan(share[i, j]) else f"{int(n)}\n{share[i, j]:.0%}"
        color = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=30, ha="right")
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10, wrap=True)
    fig.colorbar(image, ax=ax, label="share of true class")
    return _save(fig, path)


def plot_learning_curves(curves: Sequence[Mapping[str, Any]], title: str,
                         path: os.PathLike | str) -> Path:
    """Train (solid) and validation (dashed) loss per epoch, one colour per fold."""
    if not curves:
        raise ValueError(f"plot_learning_curves '{title}': no curves given")
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    palette = [f"C{i % 10}" for i in range(len(curves))]
    for curve, color in zip(curves, palette, strict=True):
        fold = curve.get("fold", "?")
        train = np.asarray(curve["train_loss"], dtype=float)
        ax.plot(np.arange(1, train.size + 1), train, color=color, lw=1.2,
                label=f"fold {fold} train")
        if curve.get("val_loss") is not None:
            val = np.asarray(curve["val_loss"], dtype=float)
            ax.plot(np.arange(1, val.size + 1), val, color=color, lw=1.2, ls="--",
                    label=f"fold {fold} val")
        best = curve.get("best_epoch")
        if best is not None:
            ax.axvline(best, color=color, lw=0.6, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) <= 6:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.99, 0.99, f"{len(curves)} folds: solid train, dashed val", fontsize=7,
                ha="right", va="top", transform=ax.transAxes)
    return _save(fig, path)


def plot_per_subject(scores: Mapping[str, Mapping[str, float]], metric_label: str,
                     path: os.PathLike | str, *, chance: float | None = None) -> Path:
    """Grouped bars of one metric per test subject, one bar colour per model.

    ``scores`` maps model -> {subject: value}; NaN values leave a gap.
    """
    if not scores:
        raise ValueError("plot_per_subject: no models given")
    subjects: list[str] = []
    for per_model in scores.values():
        subjects += [s for s in per_model if s not in subjects]
    n_models = len(scores)
    width = 0.8 / n_models
    # wide enough to read ids, capped so 24+ subjects × several models stay a viewable PNG
    fig = _new_figure(min(16.0, max(6.0, 1.5 + 0.15 * len(subjects) * n_models)), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(subjects))
    for m, (model, per_model) in enumerate(scores.items()):
        values = [float(per_model.get(s, np.nan)) for s in subjects]
        ax.bar(x - 0.4 + width * (m + 0.5), values, width=width, label=model, color=f"C{m % 10}")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, subjects, rotation=60 if len(subjects) > 8 else 0, ha="right", fontsize=8)
    ax.set_xlabel("test subject")
    ax.set_ylabel(metric_label)
    ax.set_title(f"{metric_label} per test subject")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # never over the bars
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_paired(scores: Mapping[str, Mapping[str, float]], reference: str, metric_label: str,
                path: os.PathLike | str, *, chance: float | None = None) -> Path:
    """Each model's per-subject score against the reference model's, one panel per model.

    Points above the diagonal are subjects where the model beats the reference.
    """
    others = [m for m in scores if m != reference]
    if reference not in scores or not others:
        raise ValueError(f"plot_paired: needs the reference {reference!r} and another model")
    n_cols = min(4, len(others))
    n_rows = -(-len(others) // n_cols)
    fig = _new_figure(2.6 * n_cols + 0.4, 2.6 * n_rows + 0.4)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
    ref = scores[reference]
    for ax, model in zip(axes.flat, others, strict=False):
        subjects = [s for s in ref if s in scores[model]]
        x = np.array([ref[s] for s in subjects], dtype=float)
        y = np.array([scores[model][s] for s in subjects], dtype=float)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, zorder=0)
        if chance is not None:
            ax.axhline(chance, color="0.85", lw=0.8, zorder=0)
            ax.axvline(chance, color="0.85", lw=0.8, zorder=0)
        colour = np.where(y > x, "tab:green", np.where(y < x, "tab:red", "0.5"))
        ax.scatter(x, y, s=14, color=colour, clip_on=False)
        ax.set_title(textwrap.fill(model, 28), fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    for ax in axes.flat[len(others):]:
        ax.set_visible(False)
    fig.supxlabel(f"{reference}: {metric_label}", fontsize=9)
    fig.supylabel(f"model: {metric_label}", fontsize=9)
    return _save(fig, path)

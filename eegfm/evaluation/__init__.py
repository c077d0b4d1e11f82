"""Evaluation: protocols, metrics, alignment, classical baselines, statistics, reports, plots."""

from eegfm.evaluation.metrics import (
    METRICS,
    MetricDict,
    aggregate,
    classification_metrics,
    confusion,
)
from eegfm.evaluation.plots import (
    plot_confusion_matrix,
    plot_heatmap,
    plot_learning_curves,
    plot_paired,
    plot_per_subject,
)
from eegfm.evaluation.protocols import (
    PROTOCOLS,
    Split,
    SplitHygieneError,
    check_split,
    fixed_split,
    make_splits,
    time_blocks,
)
from eegfm.evaluation.report import write_report
from eegfm.evaluation.schema import SCHEMA, ResultsSchemaError, validate_results

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "SCHEMA",
    "MetricDict",
    "ResultsSchemaError",
    "Split",
    "SplitHygieneError",
    "aggregate",
    "check_split",
    "classification_metrics",
    "confusion",
    "fixed_split",
    "make_splits",
    "plot_confusion_matrix",
    "plot_heatmap",
    "plot_learning_curves",
    "plot_paired",
    "plot_per_subject",
    "time_blocks",
    "validate_results",
    "write_report",
]

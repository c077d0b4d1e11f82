"""write_report: every file written, every model in the table, valid PNGs, schema errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from eegfm.evaluation import (
    ResultsSchemaError,
    classification_metrics,
    confusion,
    make_splits,
    plot_heatmap,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = ("eegfm_tiny (pretrained, linear)", "eegfm_tiny (random init)", "EEGNet",
          "ShallowFBCSPNet")


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # not a blank canvas


def _results(n_subjects: int = 24) -> dict:
    """Results as the fine-tuning harness builds them: LOSO splits, simulated predictions."""
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"Subject{i:02d}" for i in range(n_subjects)], 30)
    y = np.tile(np.r_[np.zeros(20, int), np.ones(10, int)], n_subjects)
    y[subjects == "Subject05"] = 0  # a single-class test subject: AUROC NaN, no crash
    splits = make_splits("loso", subjects, y, seed=0)
    models = {}
    for m, model in enumerate(MODELS):
        per_subject, notes, counts, curves = {}, {}, np.zeros((2, 2), int), []
        for split in splits:
            y_true = y[split.test]
            p1 = np.clip(0.5 + (y_true - 0.5) * 0.1 * m + rng.normal(0, 0.25, y_true.size),
                         0.01, 0.99)
            proba = np.c_[1 - p1, p1]
            y_pred = proba.argmax(1)
            scores = classification_metrics(y_true, y_pred, proba, labels=[0, 1])
            subject = split.test_subjects[0]
            per_subject[subject] = dict(scores)
            if scores.notes:
                notes[subject] = scores.notes
            counts += confusion(y_true, y_pred, labels=[0, 1])
            if split.fold < 3:
                epochs = np.arange(1, 11)
                curves.append({"fold": split.fold, "train_loss": list(1 / epochs),
                               "val_loss": list(1 / epochs + 0.05 * epochs), "best_epoch": 4})
        models[model] = {"per_subject": per_subject, "confusion_matrix": counts.tolist(),
                         "learning_curves": curves, "subject_notes": notes,
                         "info": {"n_params": 1000 * (m + 1), "train_seconds": 1.5 * m}}
    models["eegfm_tiny (pretrained, linear)"]["extras"] = {
        "routing": {"matrix": rng.dirichlet(np.ones(4), n_subjects),
                    "row_labels": sorted(set(subjects.tolist())),
                    "col_labels": ["shared", "e1", "e2", "e3"], "title": "routing per subject"},
        "spiking energy": [{"layer": "head.0", "firing_rate": 0.12, "energy_uj": 0.4},
                           {"layer": "head.1", "firing_rate": 0.08, "sops": 1200}],
    }
    return {"task": "eegmat rest vs arithmetic", "protocol": "loso", "seed": 0,
            "class_names": ["rest", "arithmetic"], "config": {"epochs": 10, "lr": 1e-3},
            "splits": [s.summary() for s in splits], "models": models,
            "notes": ["simulated predictions (test)"]}


@pytest.fixture(scope="module")
def full_results() -> dict:
    """24 test subjects (eegmat's size), four models; built once, reports are slow to draw."""
    return _results()


@pytest.fixture(scope="module")
def full_report(full_results: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report of ``full_results``, written once for the tests that read it."""
    return write_report(full_results, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def small_results() -> dict:
    """Four test subjects, for tests that mutate a deep copy."""
    return _results(n_subjects=4)


def test_report_writes_all_files(full_results: dict, full_report: dict[str, Path]) -> None:
    results, paths = full_results, full_report
    for key in ("json", "markdown", "csv", "per_subject"):
        assert paths[key].is_file(), key
    for model in MODELS:
        _assert_png(paths[f"confusion:{model}"])
        _assert_png(paths[f"learning_curves:{model}"])
    _assert_png(paths["per_subject"])
    _assert_png(paths["heatmap:eegfm_tiny (pretrained, linear)/routing"])
    assert not list(paths["json"].parent.glob("*.tmp"))

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    document = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert document["schema"] == "eegfm-results/1"
    assert document["protocol"] == "loso" and document["seed"] == 0
    assert document["config"] == {"epochs": 10, "lr": 1e-3}
    linear = document["models"][MODELS[0]]
    assert set(linear["per_subject"]) == {f"Subject{i:02d}" for i in range(24)}
    assert linear["per_subject"]["Subject05"]["auroc"] is None  # NaN written as null
    summary = linear["summary"]
    assert summary["auroc"]["n"] == 23 and summary["auroc"]["n_nan"] == 1
    expected = np.mean([s["balanced_accuracy"] for s in results["models"][MODELS[0]]
                        ["per_subject"].values()])
    assert summary["balanced_accuracy"]["mean"] == pytest.approx(expected)
    assert linear["extras"]["spiking energy"][1]["sops"] == 1200


def test_markdown_has_every_model_and_subject(full_report: dict[str, Path]) -> None:
    text = full_report["markdown"].read_text()
    main_table = text.split("## Per test subject")[0]
    for model in MODELS:
        rows = [line for line in main_table.splitlines() if line.startswith(f"| {model} |")]
        assert len(rows) == 1, model
        assert "±" in rows[0] and "| 24 |" in rows[0]
        assert "(n=23)" in rows[0]  # AUROC undefined on the single-class subject
    for i in range(24):
        assert f"| Subject{i:02d} |" in text
    assert "## Notes" in text and "AUROC undefined" in text
    assert "### spiking energy" not in text and "spiking energy" in text
    assert "| layer | firing_rate | energy_uj | sops |" in text
    assert "heatmap_routing.png" in text
    assert "per_subject_balanced_accuracy.png" in text


def test_report_rerenders_from_results_json(small_results: dict, tmp_path: Path) -> None:
    small = copy.deepcopy(small_results)
    small["models"] = {m: small["models"][m] for m in MODELS[:2]}
    for entry in small["models"].values():  # plots are covered above; keep this test fast
        for key in ("confusion_matrix", "learning_curves", "extras"):
            entry.pop(key, None)
    small["models"][MODELS[0]]["per_subject"]["Subject01"]["balanced_accuracy"] = float("nan")
    first = write_report(small, tmp_path / "a")
    document = json.loads(first["json"].read_text())
    assert document["models"][MODELS[0]]["per_subject"]["Subject01"]["balanced_accuracy"] is None
    again = write_report(document, tmp_path / "b")
    assert again["markdown"].read_text() == first["markdown"].read_text()
    assert "| Subject01 | n/a |" in again["markdown"].read_text()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop("models"), "missing key"),
    (lambda r: r.update(protocol="holdout"), "protocol"),
    (lambda r: r.update(seed="0"), "seed"),
    (lambda r: r.update(class_names=["rest"]), "class_names"),
    (lambda r: r["models"]["EEGNet"].update(learning_curve=[]), "unknown key"),
    (lambda r: r["models"]["EEGNet"].update(confusion_matrix=[[1, 2, 3]]), "shape"),
    (lambda r: r["models"]["EEGNet"]["per_subject"]["Subject01"].update(auroc="high"),
     r"\['Subject01'\]\['auroc'\]"),
    (lambda r: r["models"]["EEGNet"]["per_subject"]["Subject02"].pop("balanced_accuracy"),
     "balanced_accuracy"),
    (lambda r: r["models"]["EEGNet"]["learning_curves"][0].pop("train_loss"), "train_loss"),
    (lambda r: r.update(extras={"routing": {"matrix": [[1, 2]], "row_labels": ["a"],
                                            "col_labels": ["x"]}}), "heatmap"),
])
def test_schema_errors_name_the_key(small_results: dict, tmp_path: Path, mutate,
                                    message: str) -> None:
    results = copy.deepcopy(small_results)
    mutate(results)
    with pytest.raises(ResultsSchemaError, match=message):
        write_report(results, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_plot_heatmap_helper(tmp_path: Path) -> None:
    matrix = np.array([[0.1, 0.9, np.nan], [0.5, 0.2, 0.3]])
    path = plot_heatmap(matrix, ["S00", "S01"], ["e0", "e1", "e2"], "routing", tmp_path / "h.png")
    _assert_png(path)
    with pytest.raises(ValueError, match="does not match"):
        plot_heatmap(matrix, ["S00"], ["e0", "e1", "e2"], "routing", tmp_path / "bad.png")

"""The fine-tuning harness end to end on real eegmat recordings: split hygiene, report contents,
metrics equal to scikit-learn's, baselines, saved model; kept to a few subjects and one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from eegmat_shards import prep_eegmat_subjects
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from eegfm.checkpoint import load_finetuned, save_checkpoint
from eegfm.config import ConfigError
from eegfm.data.tasks import TaskConfig, build_task_set
from eegfm.evaluation import Split, SplitHygieneError, make_splits, time_blocks
from eegfm.evaluation.classical import C_GRID
from eegfm.heads import LinearHead
from eegfm.models import create_model
from eegfm.models.classifier import EncoderClassifier
from eegfm.training.finetune.fold_models import interpolate_weights, predict_windows
from eegfm.training.finetune.runner import hygienic_split, run_finetune

SUBJECTS = ["00", "01", "02", "03"]
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "finetune" / "tiny.yaml")
TASK = {"name": "eegmat test", "pattern": r"Subject(?P<subject>\d+)_(?P<label>[12])",
        "classes": {1: "rest", 2: "arithmetic"}, "window_s": 4.0, "stride_s": 8.0}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, eegmat_dir: Path) -> Path:
    """Shards of eegmat subjects 00-03."""
    return prep_eegmat_subjects(tmp_path_factory, eegmat_dir, SUBJECTS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny encoder checkpoint in the format `eegfm pretrain` exports."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "encoder.pt"
    save_checkpoint(path, create_model("eegfm_tiny"), extra={"note": "test"})
    return path


def config(out: Path, shards: Path, **values) -> dict:
    """A one-epoch, two-fold run on the test shards."""
    return {"task": TASK, "data": str(shards), "protocol": "kfold", "n_folds": 2,
            "n_val_subjects": 1, "out": str(out), "progress": False, "align": ["none"],
            "train": {"epochs": 1, "batch_size": 32, "threads": 1}, **values}


def test_split_hygiene_on_real_windows(shards: Path):
    task = build_task_set(TaskConfig(**{**TASK, "stride_s": 2.0}), shards, multiple_of=200,
                          progress=False)
    for protocol in ("loso", "kfold"):
        for split in make_splits(protocol, task.subject, task.y, n_folds=2, n_val_subjects=1):
            split, purged = hygienic_split(split, task, None)
            fit_rows = np.concatenate([split.train, split.val])
            assert purged == 0
            assert not set(task.subject[split.test]) & set(task.subject[fit_rows])
            assert not set(task.recording_id[split.test]) & set(task.recording_id[fit_rows])
            assert not set(task.subject[split.val]) & set(task.subject[split.train])
    groups = time_blocks(task.recording_id, task.start, 4)
    for split in make_splits("within", task.subject, task.y, groups=groups, n_folds=4,
                             n_val_groups=1):
        clean, purged = hygienic_split(split, task, groups)
        assert purged > 0  # 4 s windows every 2 s: block edges overlap
        for rows in (clean.train, clean.val):
            for i in rows:  # no kept window shares a sample with a test window
                same = split.test[task.recording_id[split.test] == task.recording_id[i]]
                assert (np.abs(task.start[same] - task.start[i]) >= 800).all()
    leak = make_splits("kfold", task.subject, task.y, n_folds=2, n_val_subjects=1)[0]
    bad = Split(fold=0, train=np.r_[leak.train, leak.test[:1]], val=leak.val,
                test=leak.test[1:], test_subjects=leak.test_subjects, protocol="kfold")
    with pytest.raises(SplitHygieneError):
        hygienic_split(bad, task, None)


def test_linear_probe_with_baselines_end_to_end(tmp_path: Path, shards: Path, checkpoint: Path):
    out = tmp_path / "run"
    results = run_finetune(config(out, shards, checkpoint=str(checkpoint), head="linear"))
    assert list(results["models"]) == ["pretrained", "random_init", "band power + LR",
                                       "tangent space + LR", "EEGNet", "ShallowFBCSPNet"]
    for name in ("results.json", "results.md", "per_subject.csv", "predictions.csv",
                 "per_subject_balanced_accuracy.png", "confusion_EEGNet.png",
                 "learning_curves_pretrained.png", "model_pretrained/model.safetensors",
                 "model_random_init/config.json", "logs/pretrained/fold_00.csv",
                 "logs/shallow/fold_01.csv", "config.yaml"):
        assert (out / name).is_file(), name
    markdown = (out / "results.md").read_text()
    for model in results["models"]:
        assert f"| {model} | 4 |" in markdown
    assert results["models"]["pretrained"]["info"]["mode"] == "frozen encoder (tokens cached)"
    # every per-subject score equals scikit-learn's on the written out-of-fold predictions
    predictions = pd.read_csv(out / "predictions.csv", dtype={"subject": str})
    classes = results["class_names"]
    for model, entry in results["models"].items():
        rows = predictions[predictions["model"] == model]
        assert len(rows) == len(predictions) // 6
        assert sorted(entry["per_subject"]) == SUBJECTS
        for subject, scores in entry["per_subject"].items():
            mine = rows[rows["subject"] == subject]
            y_true = mine["true"].map(classes.index).to_numpy()
            y_pred = mine["predicted"].map(classes.index).to_numpy()
            assert scores["balanced_accuracy"] == pytest.approx(
                balanced_accuracy_score(y_true, y_pred))
            kappa = cohen_kappa_score(y_true, y_pred)
            if scores["cohen_kappa"] is None:  # NaN is stored as null in results.json
                assert np.isnan(kappa)
            else:
                assert scores["cohen_kappa"] == pytest.approx(kappa)
            assert scores["macro_f1"] == pytest.approx(
                f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0))
            assert scores["auroc"] == pytest.approx(
                roc_auc_score(y_true, mine["p_arithmetic"].to_numpy()))
    model, meta = load_finetuned(out / "model_pretrained")
    assert meta["class_names"] == classes and meta["window_s"] == 4.0
    reference = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in model.encoder.state_dict().items():  # linear probe: encoder untouched
        torch.testing.assert_close(value, reference[key])


def _logistic(c: float, x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler,
                                                                  LogisticRegression]:
    scaler = StandardScaler().fit(x)
    return scaler, LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(
        scaler.transform(x), y)


def _probe_features(checkpoint: Path, shards: Path):
    """(task, features) by hand: the frozen encoder's tokens, mean over channels and patches,
    LayerNorm without affine (the linear head's, as built)."""
    encoder = create_model("eegfm_tiny")
    encoder.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    task = build_task_set(TaskConfig(**TASK), shards, multiple_of=encoder.patch_len,
                          progress=False)
    assert task.channel_mask.all()  # 19 channels in every window: a plain mean pools them
    with torch.no_grad():
        tokens = encoder.eval().forward_features(*(torch.from_numpy(a) for a in (
            task.x, task.coords, task.channel_mask, task.ref_coords)))
    h = tokens.mean(dim=(1, 2))
    return task, torch.nn.functional.layer_norm(h, h.shape[1:]).double().numpy()


def _chosen_c(z: np.ndarray, y: np.ndarray, split: Split) -> float:
    """C of the grid with the best validation balanced accuracy, fit on the training rows."""
    scaler, _ = _logistic(1.0, z[split.train], y[split.train])
    scores = [balanced_accuracy_score(y[split.val], model.predict(
        scaler.transform(z[split.val]))) for model in (
        _logistic(c, z[split.train], y[split.train])[1] for c in C_GRID)]
    return C_GRID[int(np.argmax(scores))]


def test_logistic_probe_is_the_classical_lr_on_the_frozen_features(tmp_path: Path, shards: Path,
                                                                    checkpoint: Path):
    out = tmp_path / "run"
    results = run_finetune(config(out, shards, checkpoint=str(checkpoint), models=["pretrained"],
                                  probe="logistic"))
    info = results["models"]["pretrained"]["info"]
    assert info["mode"] == ("frozen encoder (tokens cached), logistic probe (C chosen on "
                            "validation subjects)")
    assert "learning_curves" not in results["models"]["pretrained"]
    # by hand: scikit-learn's scaler + LR on the frozen features, C picked on validation and
    # refit on training + validation subjects
    task, z = _probe_features(checkpoint, shards)
    predictions = pd.read_csv(out / "predictions.csv", dtype={"subject": str})
    chosen = []
    for split in make_splits("kfold", task.subject, task.y, n_folds=2, n_val_subjects=1):
        chosen.append(_chosen_c(z, task.y, split))
        rows = np.r_[split.train, split.val]
        scaler, model = _logistic(chosen[-1], z[rows], task.y[rows])
        test = np.sort(split.test)
        expected = model.predict_proba(scaler.transform(z[test]))[:, 1]
        mine = predictions[predictions["fold"] == split.fold]["p_arithmetic"].to_numpy()
        np.testing.assert_allclose(mine, expected, atol=1e-4)
    assert info["chosen_C"] == ",".join(f"{c:g}" for c in chosen)
    # the saved model: the same LR on every window, with the median chosen C
    model, meta = load_finetuned(out / "model_pretrained")
    assert meta["extra"]["probe"] == "logistic" and meta["extra"]["C"] == np.median(chosen)
    scaler, direct = _logistic(np.median(chosen), z, task.y)
    np.testing.assert_allclose(predict_windows(model, task, "none", 256),
                               direct.predict_proba(scaler.transform(z)), atol=1e-4)


def test_lp_ft_starts_from_the_probe_of_the_training_subjects_and_keeps_it_when_better(
        tmp_path: Path, shards: Path, checkpoint: Path):
    frozen = run_finetune(config(tmp_path / "probe", shards, checkpoint=str(checkpoint),
                                 models=["pretrained"], probe="logistic", save_model=False))
    # a learning rate that wrecks the model: the validation subjects keep the starting point
    lpft = run_finetune(config(tmp_path / "lpft", shards, checkpoint=str(checkpoint),
                               models=["pretrained"], probe="logistic", freeze=False,
                               train={"epochs": 1, "batch_size": 32, "threads": 1,
                                      "lr": 100.0}))
    entry = lpft["models"]["pretrained"]
    info = entry["info"]
    assert info["mode"] == "full fine-tuning from the solved logistic probe (LP-FT)"
    assert info["chosen_C"] == frozen["models"]["pretrained"]["info"]["chosen_C"]
    assert info["trainable_params"] == info["params"]
    assert [curve["best_epoch"] for curve in entry["learning_curves"]] == [0, 0]
    # the start: the probe fit on the training subjects alone (C picked on the validation
    # subjects, which then stay unseen for the early stopping)
    task, z = _probe_features(checkpoint, shards)
    predictions = pd.read_csv(tmp_path / "lpft" / "predictions.csv", dtype={"subject": str})
    for split in make_splits("kfold", task.subject, task.y, n_folds=2, n_val_subjects=1):
        scaler, model = _logistic(_chosen_c(z, task.y, split), z[split.train],
                                  task.y[split.train])
        expected = model.predict_proba(scaler.transform(z[np.sort(split.test)]))[:, 1]
        mine = predictions[predictions["fold"] == split.fold]["p_arithmetic"].to_numpy()
        np.testing.assert_allclose(mine, expected, atol=1e-4)
    # refit on training + validation subjects for the selected 0 epochs: the frozen probe
    refit = run_finetune(config(tmp_path / "refit", shards, checkpoint=str(checkpoint),
                                models=["pretrained"], probe="logistic", freeze=False,
                                refit=True, save_model=False,
                                train={"epochs": 1, "batch_size": 32, "threads": 1,
                                       "lr": 100.0}))
    assert refit["models"]["pretrained"]["info"]["mode"].endswith(
        "refit on training + validation subjects for the selected epochs")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "refit" / "predictions.csv")["p_arithmetic"],
                               pd.read_csv(tmp_path / "probe" / "predictions.csv")["p_arithmetic"],
                               atol=1e-4)
    # kept in every fold, so the saved model is the probe of every window, not fine-tuned
    model, meta = load_finetuned(tmp_path / "lpft" / "model_pretrained")
    assert meta["extra"]["probe"] == "logistic" and meta["extra"]["epochs"] == 0
    scaler, direct = _logistic(meta["extra"]["C"], z, task.y)
    np.testing.assert_allclose(predict_windows(model, task, "none", 256),
                               direct.predict_proba(scaler.transform(z)), atol=1e-4)


def test_wise_ft_averages_the_lp_ft_start_and_its_fine_tuned_weights(tmp_path: Path,
                                                                     shards: Path,
                                                                     checkpoint: Path):
    def run(name: str, **values) -> tuple[dict, np.ndarray]:
        results = run_finetune(config(tmp_path / name, shards, checkpoint=str(checkpoint),
                                      models=["pretrained"], probe="logistic", freeze=False,
                                      n_val_subjects=0, **{"save_model": False, **values}))
        frame = pd.read_csv(tmp_path / name / "predictions.csv")
        return results["models"]["pretrained"], frame["p_arithmetic"].to_numpy()

    # no validation subjects: the probe keeps the grid's first C, and every fold tests the
    # weights of its last epoch (no selection can keep the start)
    lpft, p_lpft = run("lpft")
    assert [curve["best_epoch"] for curve in lpft["learning_curves"]] == [1, 1]
    whole, p_whole = run("wise1", wise=1.0)
    np.testing.assert_allclose(p_whole, p_lpft, atol=1e-6)
    assert whole["info"]["mode"].endswith("weights averaged with the start (WiSE-FT, "
                                          "1 x fine-tuned)")
    # wise 0: the start, i.e. the probe solved on each fold's training subjects
    _, p_start = run("wise0", wise=0.0, save_model=True)
    task, z = _probe_features(checkpoint, shards)
    for split in make_splits("kfold", task.subject, task.y, n_folds=2, n_val_subjects=0):
        scaler, model = _logistic(C_GRID[0], z[split.train], task.y[split.train])
        expected = model.predict_proba(scaler.transform(z[np.sort(split.test)]))[:, 1]
        np.testing.assert_allclose(p_start[np.sort(split.test)], expected, atol=1e-4)
    # the saved model: fine-tuned on every window for the selected epoch, averaged the same way
    model, meta = load_finetuned(tmp_path / "wise0" / "model_pretrained")
    assert meta["extra"]["epochs"] == 1
    scaler, direct = _logistic(C_GRID[0], z, task.y)
    np.testing.assert_allclose(predict_windows(model, task, "none", 256),
                               direct.predict_proba(scaler.transform(z)), atol=1e-4)
    _, p_half = run("wise05", wise=0.5)
    assert not np.allclose(p_half, p_lpft, atol=1e-4)
    assert not np.allclose(p_half, p_start, atol=1e-4)
    for bad in ({"wise": 1.5}, {"wise": 0.5, "head": "mlp"}, {"wise": 0.5, "freeze": True}):
        with pytest.raises(ConfigError, match="WiSE-FT averages"):
            run_finetune(config(tmp_path / "bad", shards, checkpoint=str(checkpoint),
                                models=["pretrained"], probe="logistic",
                                **{"freeze": False, **bad}))


def test_interpolate_weights_is_the_weighted_mean_of_the_float_weights():
    torch.manual_seed(0)
    model = EncoderClassifier(create_model("eegfm_tiny"), LinearHead(64, 2), frozen=False)
    start = model.selection_state()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    end = model.selection_state()
    interpolate_weights(model, start, 0.25)
    for key, value in model.selection_state().items():
        np.testing.assert_allclose(value.numpy(), 0.75 * start[key].numpy()
                                   + 0.25 * end[key].numpy(), rtol=1e-6, atol=1e-6)


def test_mlp_fine_tuning_updates_the_encoder(tmp_path: Path, shards: Path, checkpoint: Path):
    results = run_finetune(config(tmp_path, shards, checkpoint=str(checkpoint), head="mlp",
                                  models=["pretrained"], max_folds=1,
                                  train={"epochs": 1, "batch_size": 32, "threads": 1,
                                         "layer_decay": 0.75}))
    info = results["models"]["pretrained"]["info"]
    assert info["mode"] == "full fine-tuning" and info["trainable_params"] == info["params"]
    assert any("max_folds=1" in note for note in results["notes"])
    model, _ = load_finetuned(tmp_path / "model_pretrained")
    reference = torch.load(checkpoint, weights_only=True)["state_dict"]
    changed = [k for k, v in model.encoder.state_dict().items()
               if not torch.equal(v, reference[k])]
    assert any(k.startswith("blocks.0") for k in changed)


def test_augment_windows_augments_the_training_windows_of_full_fine_tuning(tmp_path: Path,
                                                                          shards: Path):
    def train_loss(**values) -> list[float]:
        results = run_finetune(config(tmp_path / str(len(values)), shards, head="mlp",
                                      models=["random_init"], max_folds=1, save_model=False,
                                      **values))
        return results["models"]["random_init"]["learning_curves"][0]["train_loss"]

    plain = train_loss()
    assert train_loss(augment_windows=True, augment={"probability": 1.0}) != plain
    # zero probability: the same transforms draw nothing, so the same fit as without them
    np.testing.assert_allclose(train_loss(augment_windows=True, augment={"probability": 0.0},
                                          seed=0), plain, rtol=1e-5)
    with pytest.raises(ConfigError, match="augment_windows needs full fine-tuning"):
        run_finetune(config(tmp_path / "frozen", shards, augment_windows=True))


@pytest.mark.parametrize("model", ["random_init", "eegnet"])
def test_refit_trains_again_on_training_and_validation_subjects_for_the_selected_epochs(
        tmp_path: Path, shards: Path, model: str):
    runs = {}
    for refit in (False, True):
        runs[refit] = run_finetune(config(tmp_path / str(refit), shards, head="mlp",
                                          models=[model], max_folds=1, refit=refit,
                                          save_model=False,
                                          train={"epochs": 3, "batch_size": 32, "threads": 1},
                                          baselines={"epochs": 3}))
    entry = {refit: next(iter(run["models"].values())) for refit, run in runs.items()}
    best = entry[True]["learning_curves"][0]["best_epoch"]
    assert best == entry[False]["learning_curves"][0]["best_epoch"]
    assert entry[True]["info"]["mode"].endswith("for the selected epochs")
    log = pd.read_csv(tmp_path / "True" / "logs" / model / "fold_00_refit.csv")
    assert list(log["epoch"]) == list(range(1, best + 1)) and "val_loss" not in log
    assert not (tmp_path / "False" / "logs" / model / "fold_00_refit.csv").exists()
    p = [pd.read_csv(tmp_path / str(r) / "predictions.csv")["p_arithmetic"] for r in runs]
    assert not np.allclose(p[0], p[1], atol=1e-3)  # the refit model is the one tested


@pytest.mark.parametrize(("head", "spiking"), [("shared_routed", "lif"), ("linear", "int")])
def test_shared_routed_and_spiking_heads_report_extras(tmp_path: Path, shards: Path,
                                                       head: str, spiking: str):
    results = run_finetune(config(tmp_path, shards, head=head, spiking=spiking,
                                  models=["random_init"], max_folds=1, save_model=False))
    extras = results["models"]["random_init"]["extras"]
    energy = next(v for k, v in extras.items() if k.startswith("energy (per sample"))
    assert energy[0]["spiking"] == spiking and 0 < energy[0]["energy_ratio"] < 1
    assert extras["energy per layer (mean over folds)"]
    if head == "shared_routed":
        matrix = extras["routing matrix"]
        assert len(matrix["row_labels"]) == 2  # the test subjects of fold 0
        np.testing.assert_allclose(np.sum(matrix["matrix"], axis=1), 1.0, atol=1e-5)
        assert "routing_consistency" in extras["routing diagnostics (test subjects)"][0]
        assert (tmp_path / "random_init_heatmap_routing_matrix.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["spiking"] == spiking


def test_cli_without_checkpoint_runs_random_init_only(tmp_path: Path, shards: Path, capsys):
    from eegfm.cli import main

    code = main(["finetune", "--config", TINY, "--data", str(shards),
                 "--models", "[pretrained,random_init]", "--out", str(tmp_path), "--max_folds",
                 "1", "--save_model", "false", "--seed", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "no --checkpoint given" in captured.err and "random_init" in captured.out
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["models"]) == ["random_init", "random_init (aligned)"]
    assert results["seed"] == 3
    assert main(["finetune", "--config", TINY, "--data",
                 str(tmp_path / "missing")]) == 2
    assert "not a shard directory" in capsys.readouterr().err


def test_same_seed_gives_the_same_report(tmp_path: Path, shards: Path):
    """Seeds fix splits, initialisation, sampling and the pair-view augmentations."""
    runs = [run_finetune(config(tmp_path / name, shards, head="shared_routed", seed=5,
                                models=["random_init"], max_folds=1, save_model=False))
            for name in ("a", "b")]
    assert runs[0]["models"]["random_init"]["per_subject"] == \
        runs[1]["models"]["random_init"]["per_subject"]
    assert runs[0]["splits"] == runs[1]["splits"]
    first = pd.read_csv(tmp_path / "a" / "predictions.csv")
    np.testing.assert_array_equal(first["p_rest"], pd.read_csv(tmp_path / "b" /
                                                                "predictions.csv")["p_rest"])


def test_every_model_kind_aligned_and_not_with_paired_statistics(tmp_path: Path, shards: Path):
    models = ["random_init", "bandpower_lr", "tangent_lr", "eegnet"]
    results = run_finetune(config(tmp_path, shards, models=models, align=["none", "euclidean"]))
    names = ["random_init", "band power + LR", "tangent space + LR", "EEGNet"]
    assert list(results["models"]) == names + [f"{n} (aligned)" for n in names]
    info = {name: entry["info"] for name, entry in results["models"].items()}
    assert info["EEGNet"]["alignment"] == "none"
    assert info["EEGNet (aligned)"]["alignment"].startswith("Euclidean alignment")
    assert info["tangent space + LR (aligned)"]["alignment"].startswith("covariances re-centred")
    assert info["band power + LR (aligned)"]["alignment"].startswith("band powers standardised")
    assert len(info["band power + LR"]["chosen_C"].split(",")) == 2  # one C per fold
    # alignment changes what the models see: the aligned runs predict differently
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    for name in names:
        plain = predictions[predictions["model"] == name]["p_rest"].to_numpy()
        aligned = predictions[predictions["model"] == f"{name} (aligned)"]["p_rest"].to_numpy()
        assert len(plain) == len(aligned) and not np.allclose(plain, aligned)
    statistics = results["statistics"]
    baselines = names[1:] + [f"{n} (aligned)" for n in names[1:]]
    means = {n: results["models"][n]["summary"]["balanced_accuracy"]["mean"] for n in baselines}
    assert statistics["reference"] == max(means, key=means.get)
    assert len(statistics["pairs"]) == 8 * 7 // 2
    pair = next(p for p in statistics["pairs"]
                if (p["model"], p["versus"]) == ("random_init", "EEGNet"))
    per = {m: results["models"][m]["per_subject"] for m in ("random_init", "EEGNet")}
    assert pair["mean_difference"] == pytest.approx(np.mean(
        [per["random_init"][s]["balanced_accuracy"] - per["EEGNet"][s]["balanced_accuracy"]
         for s in SUBJECTS]))
    markdown = (tmp_path / "results.md").read_text()
    assert f"## Paired comparison with the best baseline ({statistics['reference']})" in markdown
    assert (tmp_path / "paired_balanced_accuracy.png").is_file()
    _, meta = load_finetuned(tmp_path / "model_random_init_aligned")
    assert meta["align"] == "euclidean"
    assert load_finetuned(tmp_path / "model_random_init")[1]["align"] == "none"


def test_fixed_subject_split(tmp_path: Path, shards: Path):
    results = run_finetune(config(tmp_path, shards, protocol="split",
                                  split={"train": ["00", "01"], "val": ["02"], "test": ["03"]},
                                  models=["bandpower_lr"], save_model=False))
    (split,) = results["splits"]
    assert split["test_subjects"] == ["03"] and split["val_subjects"] == ["02"]
    assert list(results["models"]["band power + LR"]["per_subject"]) == ["03"]
    task = build_task_set(TaskConfig(**TASK), shards, progress=False)
    assert split["n_test"] == int((task.subject == "03").sum())
    assert split["n_train"] == int(np.isin(task.subject, ["00", "01"]).sum())
    # a subject left out of the lists is used nowhere, and the report says so
    run = run_finetune(config(tmp_path / "b", shards, protocol="split", models=["bandpower_lr"],
                              split={"train": ["00", "01"], "test": ["03"]}, save_model=False))
    assert run["splits"][0]["n_val"] == 0
    assert any("['02'] are in no list" in note for note in run["notes"])


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "[random_init,transformer9]"], "models: unknown ['transformer9']"),
    (["--protocol", "split", "--split.train", '["00","01"]', "--split.test", '["01","03"]'],
     "['01'] are in both split.train and split.test"),
    (["--protocol", "split", "--split.train", '["00","01"]', "--split.test", "[42]"],
     "split.test: expected str, got 42"),
    (["--protocol", "split", "--split.train+", "00", "--split.train+", "01",
      "--split.test+", "42"], "split.test: subject(s) ['42'] are not in the data"),
    (["--protocol", "split"], "protocol split needs the split section"),
    (["--align", "[none,procrustes]"], "expected one of ['none', 'euclidean']"),
    (["--max_folds", "0"], "max_folds must be at least 1"),
])
def test_bad_model_split_and_alignment_options_exit_2(tmp_path: Path, shards: Path, capsys,
                                                      args: list[str], message: str):
    from eegfm.cli import main

    code = main(["finetune", "--config", TINY, "--data", str(shards), "--out", str(tmp_path),
                 *args])
    lines = [line for line in capsys.readouterr().err.splitlines()
             if "no --checkpoint given" not in line]  # the notice that no encoder was given
    assert code == 2
    assert len(lines) == 1 and message in lines[0]


def test_a_rerun_reuses_finished_models_and_only_those(tmp_path: Path, shards: Path):
    """An interrupted report is not lost: each finished model is kept in OUT/partial/."""
    values = {"models": ["random_init", "bandpower_lr"], "max_folds": 1}
    first = run_finetune(config(tmp_path, shards, **values))
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "bandpower_lr.csv", "bandpower_lr.json", "random_init.csv", "random_init.json"]
    (tmp_path / "partial" / "random_init.json").unlink()  # as if killed during random_init
    log = tmp_path / "logs" / "random_init" / "fold_00.csv"
    log.unlink()
    second = run_finetune(config(tmp_path, shards, **values))
    assert log.is_file()  # random_init ran again
    assert any("Reused" in n and "band power + LR" in n and "random_init" not in n
               for n in second["notes"])
    for model in first["models"]:
        assert second["models"][model]["per_subject"] == first["models"][model]["per_subject"]
    # another seed changes every model's result: nothing is reused
    third = run_finetune(config(tmp_path, shards, seed=1, **values))
    assert not any("Reused" in n for n in third["notes"])
    fourth = run_finetune(config(tmp_path, shards, resume=False, **values))
    assert not any("Reused" in n for n in fourth["notes"])

"""One model over all folds: the encoder + head models and the braindecode baselines.

Called by :func:`eegfm.training.finetune_runner.run_finetune` with a shared context (config,
task set, checked splits, output directory). Each returns the model's ``results`` entry and its
out-of-fold predictions.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from eegfm.heads import Head, create_head, make_view_augmenter, masked_mean_pool
from eegfm.training.baselines import BraindecodeClassifier
from eegfm.training.finetune_loop import FitResult, fit, predict_logits
from eegfm.training.finetune_module import (
    EncoderClassifier,
    WindowTensors,
    encode_windows,
    save_finetuned,
)
from eegfm.training.finetune_report import (
    energy_tables,
    learning_curve,
    model_results,
    predictions_frame,
)

ENERGY_WINDOWS = 256  # test windows measured per fold for the spiking energy report


def neighbour_index(recording_id: np.ndarray, start: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``pair[i]``: the next (else previous) window of ``i``'s recording among ``rows``.

    Only windows of ``rows`` (a fold's training windows) are paired, so the second view of a
    training window never comes from validation or test data; a lone window pairs with itself.
    """
    pair = np.arange(len(recording_id))
    rows = np.asarray(rows)
    order = rows[np.lexsort((start[rows], recording_id[rows]))]
    rec = recording_id[order]
    same_next = np.r_[rec[1:] == rec[:-1], False]
    same_prev = np.r_[False, rec[1:] == rec[:-1]]
    pair[order] = np.where(same_next, np.roll(order, -1),
                           np.where(same_prev, np.roll(order, 1), order))
    return pair


class OutOfFold:
    """One model's out-of-fold test probabilities and per-fold fits, collected fold by fold."""

    def __init__(self, n_windows: int, n_classes: int) -> None:
        self.proba = np.zeros((n_windows, n_classes), dtype=np.float64)
        self.tested = np.zeros(n_windows, dtype=bool)
        self.fold_of = np.full(n_windows, -1)
        self.curves: list[dict[str, Any]] = []
        self.fits: list[FitResult] = []

    def add(self, fold: int, test: np.ndarray, logits: torch.Tensor, result: FitResult) -> None:
        """Record one fold: its test windows' probabilities and its training history."""
        self.proba[test] = torch.softmax(logits, 1).numpy()
        self.tested[test], self.fold_of[test] = True, fold
        self.curves.append(learning_curve(fold, result))
        self.fits.append(result)

    def entry(self, task: Any) -> dict[str, Any]:
        """The model's results entry: per-subject metrics and learning curves."""
        entry = model_results(task.y, self.proba, task.subject, self.tested, task.class_names)
        entry["learning_curves"] = self.curves
        return entry

    def fit_info(self) -> dict[str, Any]:
        """Training figures summed or averaged over folds (for ``info``)."""
        return {
            "mean_best_epoch": float(np.mean([f.best_epoch for f in self.fits])),
            "skipped_steps": int(sum(f.skipped_steps for f in self.fits)),
            "fit_s": round(sum(f.seconds for f in self.fits), 1),
        }

    def predictions(self, name: str, task: Any) -> Any:
        """Per-window out-of-fold predictions (``predictions.csv`` rows)."""
        return predictions_frame(name, task, self.proba, self.fold_of, self.tested)


def _subject_ids(subject: np.ndarray) -> np.ndarray:
    return np.unique(subject, return_inverse=True)[1].astype(np.int64)


def _n_params(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _tokens(model: EncoderClassifier, data: WindowTensors, rows: np.ndarray, batch_size: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and valid mask of ``rows`` (from the cache, or an encoder pass without grad)."""
    if data.tokens is not None:
        batch = data.batch(rows)
        return batch.tokens, batch.channel_mask
    outs, masks, width = [], [], int(data.channel_mask[rows].sum(1).max())
    model.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            tokens, mask = model.encode(data.batch(rows[s:s + batch_size]))
            pad = width - tokens.shape[1]
            outs.append(torch.nn.functional.pad(tokens, (0, 0, 0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(mask, (0, pad)))
    return torch.cat(outs), torch.cat(masks)


def _has_own(head: Head, method: str) -> bool:
    return getattr(type(head), method) is not getattr(Head, method)


def _fold_fit(model, data, train, val, cfg, seed, pair, ctx, name, fold, stop_after=None
              ) -> FitResult:
    logs = ctx["out"] / "logs" / name
    tag = f"fold_{fold:02d}" if fold >= 0 else "final"
    baseline = name in ("eegnet", "shallow")
    return fit(model, data, train, val, cfg.train,
               lr=(cfg.baselines.lr or cfg.train.lr) if baseline else cfg.train.lr,
               weight_decay=cfg.baselines.weight_decay if baseline else cfg.train.weight_decay,
               seed=seed, epochs=(cfg.baselines.epochs or cfg.train.epochs) if baseline else None,
               stop_after=stop_after, pair_index=pair, csv_path=logs / f"{tag}.csv",
               tensorboard_dir=(logs / "tb" / tag) if cfg.tensorboard else None,
               progress=cfg.progress, desc=f"{name} {tag}")


def _bar(splits, enabled: bool, name: str):
    if not enabled:
        return splits
    from tqdm import tqdm

    return tqdm(splits, desc=f"{name}: folds", unit="fold", dynamic_ncols=True, position=0)


def run_encoder_model(name: str, reference: torch.nn.Module, ctx: dict[str, Any]):
    """``pretrained`` (the checkpoint's encoder) or ``random_init`` (same architecture, fresh)."""
    cfg, task, splits = ctx["cfg"], ctx["task"], ctx["splits"]
    started = time.perf_counter()
    K = task.n_classes

    def new_encoder() -> torch.nn.Module:
        if name == "pretrained":
            return copy.deepcopy(reference)
        torch.manual_seed(ctx["seed_of"](cfg.seed, name, "encoder"))
        return type(reference)(**reference.config)

    def new_head(seed: int) -> Head:
        torch.manual_seed(seed)
        try:
            return create_head(cfg.head, reference.embed_dim, K, cfg.spiking, **cfg.head_options)
        except TypeError as error:  # an option the head does not take
            raise ValueError(f"head {cfg.head!r}, head_options {cfg.head_options}: {error}"
                             ) from error

    probe = new_head(0)
    frozen = cfg.frozen
    subject_ids = _subject_ids(task.subject)
    data = WindowTensors(task.y, x=task.x, coords=task.coords, ref_coords=task.ref_coords,
                         channel_mask=task.channel_mask, subject_ids=subject_ids)
    shared_encoder = new_encoder() if frozen else None
    cache_mb = (task.x.shape[0] * task.x.shape[1] * (task.x.shape[2] // reference.patch_len)
                * reference.embed_dim * 4 / 2**20)
    cached = frozen and not probe.needs_pair_view and cache_mb <= cfg.token_cache_mb
    if cached:
        tokens, token_mask = encode_windows(shared_encoder, data, cfg.train.eval_batch_size,
                                            cfg.progress)
        data = WindowTensors(task.y, tokens=tokens, token_mask=token_mask,
                             subject_ids=subject_ids)
    oof = OutOfFold(len(task), K)
    energy, routing_rows, routing_matrix = [], [], []
    for split in _bar(splits, cfg.progress, name):
        seed = ctx["seed_of"](cfg.seed, name, split.fold)
        model = EncoderClassifier(shared_encoder if frozen else new_encoder(), new_head(seed),
                                  frozen=frozen)
        pair = _pair_setup(model, task, split.train, task.sfreq, seed, cfg)
        _init_head(model, data, split.train, subject_ids, cfg)
        result = _fold_fit(model, data, split.train, split.val, cfg, seed, pair, ctx, name,
                           split.fold)
        oof.add(split.fold, split.test,
                predict_logits(model, data, split.test, cfg.train.eval_batch_size), result)
        if cfg.spiking != "none" or hasattr(model.head, "routing_matrix"):
            tokens, mask = _tokens(model, data, split.test, cfg.train.eval_batch_size)
            if cfg.spiking != "none":
                from eegfm.spiking import energy_report

                energy.append((split.fold, energy_report(model.head, tokens[:ENERGY_WINDOWS],
                                                         mask[:ENERGY_WINDOWS])))
            if hasattr(model.head, "routing_matrix") and model.head.has_routed:
                _routing(model.head, tokens, mask, task.subject[split.test], split,
                         routing_rows, routing_matrix)
    entry = oof.entry(task)
    entry["info"] = {
        "model": f"eegfm encoder ({'checkpoint' if name == 'pretrained' else 'random init'})",
        "head": cfg.head, "spiking": cfg.spiking,
        "mode": "frozen encoder" + (" (tokens cached)" if cached else "") if frozen
        else "full fine-tuning",
        "params": _n_params(model), "trainable_params": _n_params(model, trainable=True),
        **oof.fit_info(),
    }
    extras = {}
    if energy:
        extras.update(energy_tables(energy))
    if routing_rows:
        extras["routing diagnostics (test subjects)"] = routing_rows
        rows = [r for r, _ in routing_matrix]
        extras["routing matrix"] = {
            "matrix": [m for _, m in routing_matrix], "row_labels": rows,
            "col_labels": [f"expert {e}" for e in range(len(routing_matrix[0][1]))],
            "title": f"{name}: mean routing weight per test subject", "colorbar_label": "weight"}
    if any(f.diagnostics for f in oof.fits):
        extras["head diagnostics (end of training)"] = [
            {"fold": s.fold, **f.diagnostics} for s, f in zip(splits, oof.fits, strict=True)]
    if extras:
        entry["extras"] = extras
    if cfg.save_model:
        entry["info"]["saved_model"] = _refit_and_save(
            name, new_encoder, new_head, data, task, subject_ids, oof.fits, ctx)
    entry["info"]["total_s"] = round(time.perf_counter() - started, 1)
    return entry, oof.predictions(name, task)


def _pair_setup(model, task, train, sfreq, seed, cfg) -> np.ndarray | None:
    if not model.head.needs_pair_view:
        return None
    model.augment = make_view_augmenter(sfreq, seed=seed, **cfg.augment)
    return neighbour_index(task.recording_id, task.start, train)


def _init_head(model, data, train, subject_ids, cfg) -> None:
    """Data-driven head initialisation from pooled training features (shared_routed)."""
    if not _has_own(model.head, "init_from_features"):
        return
    tokens, mask = _tokens(model, data, train, cfg.train.eval_batch_size)
    h = masked_mean_pool(tokens, mask)
    model.head.init_from_features(h, torch.as_tensor(subject_ids[train]))


def _routing(head, tokens, mask, subjects, split, rows, matrix) -> None:
    """Routing diagnostics and mean routing weights of the fold's test subjects."""
    h = masked_mean_pool(tokens, mask)
    names, codes = np.unique(subjects, return_inverse=True)
    codes = torch.as_tensor(codes)
    rows.append({"fold": split.fold, "test_subjects": ",".join(map(str, split.test_subjects)),
                 **head.routing_diagnostics(h, codes)})
    ids, weights = head.routing_matrix(h, codes)
    for i, w in zip(ids.tolist(), weights.tolist(), strict=True):
        label = str(names[i]) if split.protocol != "within" else f"{names[i]} (fold {split.fold})"
        matrix.append((label, w))


def _refit_and_save(name, new_encoder, new_head, data, task, subject_ids, fits, ctx) -> str:
    """Train on every window for the median selected epoch count; save ``model_<name>.pt``."""
    cfg = ctx["cfg"]
    epochs = max(1, round(float(np.median([f.best_epoch for f in fits]))))
    seed = ctx["seed_of"](cfg.seed, name, "final")
    model = EncoderClassifier(new_encoder(), new_head(seed), frozen=cfg.frozen)
    rows = np.arange(len(task))
    pair = _pair_setup(model, task, rows, task.sfreq, seed, cfg)
    _init_head(model, data, rows, subject_ids, cfg)
    _fold_fit(model, data, rows, np.zeros(0, dtype=np.int64), cfg, seed, pair, ctx, name, -1,
              stop_after=epochs)
    path = ctx["out"] / f"model_{name}.pt"
    stride = ((cfg.task.stride_s or task.window_s) if cfg.task.type == "recording"
              else task.window_s)
    save_finetuned(path, model.eval(), class_names=task.class_names, window_s=task.window_s,
                   stride_s=stride, sfreq=task.sfreq, prep_config=ctx["prep_config"],
                   extra={"task": task.name, "model": name, "epochs": epochs,
                          "n_windows": len(task), "subjects": sorted(set(task.subject.tolist()))})
    return path.name


def run_baselines(names: list[str], ctx: dict[str, Any]) -> dict[str, tuple[dict, Any]]:
    """EEGNet / ShallowFBCSPNet from scratch on the channels common to every recording."""
    cfg, task, splits = ctx["cfg"], ctx["task"], ctx["splits"]
    channels = task.common_channels()
    if not channels:
        ctx["notes"].append("Baselines skipped: the recordings share no channel name, and "
                            "EEGNet/ShallowFBCSPNet need one fixed montage.")
        return {}
    x = task.channel_matrix(channels)
    n = len(task)
    data = WindowTensors(task.y, x=x, coords=np.zeros((n, len(channels), 3), np.float32),
                         ref_coords=np.zeros((n, len(channels), 3), np.float32),
                         channel_mask=np.ones((n, len(channels)), bool))
    if len(channels) < task.x.shape[1]:
        ctx["notes"].append(f"Baselines use the {len(channels)} channels common to all "
                            f"recordings ({', '.join(channels)}).")
    out = {}
    for name in names:
        started = time.perf_counter()
        options = dict(getattr(cfg.baselines, name))
        oof = OutOfFold(n, task.n_classes)
        model = None
        for split in _bar(splits, cfg.progress, name):
            seed = ctx["seed_of"](cfg.seed, name, split.fold)
            torch.manual_seed(seed)
            model = BraindecodeClassifier(name, len(channels), task.n_classes, x.shape[-1],
                                          task.sfreq, input_scale_uv=cfg.baselines.input_scale_uv,
                                          **options)
            result = _fold_fit(model, data, split.train, split.val, cfg, seed, None, ctx, name,
                               split.fold)
            oof.add(split.fold, split.test,
                    predict_logits(model, data, split.test, cfg.train.eval_batch_size), result)
        entry = oof.entry(task)
        entry["info"] = {
            "model": f"braindecode {model.name} (from scratch)", "head": "-", "spiking": "none",
            "mode": "trained from scratch", "params": _n_params(model),
            "trainable_params": _n_params(model, trainable=True),
            **oof.fit_info(),
            "total_s": round(time.perf_counter() - started, 1),
        }
        out[name] = (entry, oof.predictions(model.name, task))
    return out

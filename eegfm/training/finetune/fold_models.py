"""Every entry of a fine-tuning report behind one protocol, evaluated by one fold loop.

A :class:`FoldModel` fits on a split's training windows (its validation subjects for
selection) and predicts class probabilities of any windows; :func:`cross_validate` runs it over
the run's splits and turns the out-of-fold predictions into the report entry, as MOABB's
evaluations treat every pipeline alike. Three families implement it:

- :class:`EncoderFoldModel`: the pretrained encoder (or the same architecture from random
  init) + a head from :mod:`eegfm.heads`, frozen or fine-tuned;
- :class:`NetworkFoldModel`: EEGNet, ShallowFBCSPNet, EEGConformer, DBConformer from scratch;
- :class:`ClassicalFoldModel`: log band power + LR, tangent space + LR.

Each is built for one subject alignment (``none`` or ``euclidean``); the windows or features it
reads are aligned once, per subject, before the folds (:mod:`eegfm.evaluation.alignment`).
"""

from __future__ import annotations

import copy
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from lightning.fabric import Fabric
from sklearn.pipeline import Pipeline

from eegfm.checkpoint import save_finetuned
from eegfm.console import progress as progress_bar
from eegfm.data.tasks import TaskSet
from eegfm.evaluation import Split
from eegfm.evaluation.alignment import euclidean_align
from eegfm.evaluation.classical import (
    classical_features,
    classical_pipeline,
    fit_with_validation,
    logistic_as_linear,
    logistic_probe,
)
from eegfm.heads import (
    Head,
    LinearHead,
    SharedRoutedHead,
    create_head,
    make_view_augmenter,
    masked_mean_pool,
)
from eegfm.models.classifier import EncoderClassifier
from eegfm.spiking import energy_report
from eegfm.training.finetune.baselines import BraindecodeClassifier
from eegfm.training.finetune.config import FinetuneConfig
from eegfm.training.finetune.loop import FitResult, fit, predict_logits
from eegfm.training.finetune.module import WindowTensors, autocast, encode_windows, on_device
from eegfm.training.finetune.report import (
    energy_tables,
    learning_curve,
    model_results,
    predictions_frame,
)

ENERGY_WINDOWS = 256  # test windows measured per fold for the spiking energy report
REFIT_MODE = ", refit on training + validation subjects for the selected epochs"  # info mode
DISPLAY = {"pretrained": "pretrained", "random_init": "random_init",
           "bandpower_lr": "band power + LR", "tangent_lr": "tangent space + LR",
           "eegnet": "EEGNet", "shallow": "ShallowFBCSPNet", "conformer": "EEGConformer",
           "dbconformer": "DBConformer"}
ALIGNMENT_FORM = {
    "encoder": "Euclidean alignment of the windows (per subject)",
    "network": "Euclidean alignment of the windows (per subject)",
    "bandpower_lr": "band powers standardised per subject",
    "tangent_lr": "covariances re-centred per subject (Riemannian mean)",
}


def seed_of(*parts: Any) -> int:
    """A stable 31-bit seed from the run seed, model name and fold."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def display_name(key: str, align: str) -> str:
    """The report name of model ``key`` under alignment ``align``."""
    return DISPLAY[key] + ("" if align == "none" else " (aligned)")


def model_tag(key: str, align: str) -> str:
    """The file-name form of model ``key`` under ``align`` (logs, saved models, partials)."""
    return key + ("" if align == "none" else "_aligned")


@dataclass
class RunContext:
    """What every model of one run shares: config, windows, checked splits, output, notes."""

    cfg: FinetuneConfig
    task: TaskSet
    splits: list[Split]
    out: Path
    prep_config: dict[str, Any]
    notes: list[str]
    fabric: Fabric | None = None  # device and precision (None: the CPU in float32)


class FoldModel(ABC):
    """One entry of a report: fit on a split's training windows, predict probabilities."""

    def __init__(self, key: str, align: str, ctx: RunContext):
        self.key, self.align, self.ctx = key, align, ctx
        self.display, self.tag = display_name(key, align), model_tag(key, align)

    @abstractmethod
    def fit(self, split: Split, seed: int) -> FitResult | None:
        """Fit on ``split.train`` (select on ``split.val``); the fit's history, if it has one."""

    @abstractmethod
    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities ``(len(rows), K)`` of the task windows ``rows``."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """The report's description of the model (kind, mode, parameters)."""

    def after_fold(self, split: Split) -> None:  # noqa: B027 (optional hook, no-op default)
        """Collect per-fold diagnostics of the fitted model (default: none)."""

    def extras(self) -> dict[str, Any]:
        """Extra report tables and heatmaps gathered over the folds (default: none)."""
        return {}

    def save(self, fits: list[FitResult]) -> str | None:
        """Refit on every window and save the model for ``eegfm predict`` (default: not saved)."""
        return None


class OutOfFold:
    """One model's out-of-fold test probabilities and per-fold fits, collected fold by fold."""

    def __init__(self, n_windows: int, n_classes: int) -> None:
        self.proba = np.zeros((n_windows, n_classes), dtype=np.float64)
        self.tested = np.zeros(n_windows, dtype=bool)
        self.fold_of = np.full(n_windows, -1)
        self.curves: list[dict[str, Any]] = []
        self.fits: list[FitResult] = []

    def add(self, fold: int, test: np.ndarray, proba: np.ndarray,
            result: FitResult | None) -> None:
        """Record one fold: its test windows' probabilities and its training history."""
        self.proba[test] = proba
        self.tested[test], self.fold_of[test] = True, fold
        if result is not None:
            self.curves.append(learning_curve(fold, result))
            self.fits.append(result)

    def entry(self, task: TaskSet) -> dict[str, Any]:
        """The model's results entry: per-subject metrics and learning curves."""
        entry = model_results(task.y, self.proba, task.subject, self.tested, task.class_names)
        if self.curves:
            entry["learning_curves"] = self.curves
        return entry

    def fit_info(self) -> dict[str, Any]:
        """Training figures summed or averaged over folds (for ``info``)."""
        if not self.fits:
            return {}
        return {
            "mean_best_epoch": float(np.mean([f.best_epoch for f in self.fits])),
            "skipped_steps": int(sum(f.skipped_steps for f in self.fits)),
            "fit_s": round(sum(f.seconds for f in self.fits), 1),
        }

    def predictions(self, name: str, task: TaskSet) -> pd.DataFrame:
        """Per-window out-of-fold predictions (``predictions.csv`` rows)."""
        return predictions_frame(name, task, self.proba, self.fold_of, self.tested)


def cross_validate(model: FoldModel, ctx: RunContext) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run ``model`` over every split of ``ctx``: its report entry and out-of-fold predictions."""
    started = time.perf_counter()
    task, cfg = ctx.task, ctx.cfg
    oof = OutOfFold(len(task), task.n_classes)
    splits = ctx.splits
    if cfg.progress:
        splits = progress_bar(splits, desc=f"{model.display}: folds", unit="fold")
    for split in splits:
        result = model.fit(split, seed_of(cfg.seed, model.key, split.fold))
        oof.add(split.fold, split.test, model.predict_proba(split.test), result)
        model.after_fold(split)
    entry = oof.entry(task)
    entry["info"] = {**model.info(), **oof.fit_info()}
    extras = model.extras()
    if any(f.diagnostics for f in oof.fits):
        extras["head diagnostics (end of training)"] = [
            {"fold": s.fold, **f.diagnostics} for s, f in zip(ctx.splits, oof.fits, strict=True)]
    if extras:
        entry["extras"] = extras
    if cfg.save_model:
        saved = model.save(oof.fits)
        if saved is not None:
            entry["info"]["saved_model"] = saved
    entry["info"]["total_s"] = round(time.perf_counter() - started, 1)
    return entry, oof.predictions(model.display, task)


def interpolate_weights(model: EncoderClassifier, start: dict[str, torch.Tensor],
                        alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): set the model's trained weights to ``(1 - alpha) x
    start + alpha x`` their current values (floating-point entries; others keep the current)."""
    end = model.selection_state()
    model.load_selection_state({
        k: torch.lerp(start[k], v, alpha) if v.is_floating_point() else v
        for k, v in end.items()})


def _fit(model: torch.nn.Module, data: WindowTensors, train: np.ndarray, val: np.ndarray,
         fm: FoldModel, seed: int, fold: int, *, lr: float, weight_decay: float,
         epochs: int | None = None, pair: np.ndarray | None = None,
         stop_after: int | None = None, keep_start: bool = False,
         refit: bool = False, wise: float | None = None) -> FitResult:
    """The harness's training loop with the run's logging for fold ``fold`` (-1: final model;
    ``refit``: the fold's refit on training + validation subjects; ``wise``: the fitted weights
    averaged with the start's, :func:`interpolate_weights`)."""
    cfg = fm.ctx.cfg
    logs = fm.ctx.out / "logs" / fm.tag
    tag = "final" if fold < 0 else f"fold_{fold:02d}" + ("_refit" if refit else "")
    start = model.selection_state() if wise is not None else None
    result = fit(model, data, train, val, cfg.train, lr=lr, weight_decay=weight_decay,
                 seed=seed, epochs=epochs, stop_after=stop_after, pair_index=pair,
                 fabric=fm.ctx.fabric, csv_path=logs / f"{tag}.csv",
                 tensorboard_dir=(logs / "tb" / tag) if cfg.tensorboard else None,
                 progress=cfg.progress, desc=f"{fm.display} {tag}", keep_start=keep_start)
    if start is not None:
        interpolate_weights(model, start, wise)
    return result


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits, 1).numpy().astype(np.float64)


def _n_params(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def window_layouts(task: TaskSet) -> np.ndarray:
    """One id per window naming its recording's channel list (windows of one cap share it)."""
    ids = {rec: "\x1f".join(names) for rec, names in task.ch_names.items()}
    return np.asarray([ids[rec] for rec in task.recording_id])


def aligned_windows(task: TaskSet, align: str) -> np.ndarray:
    """The task's padded windows, Euclidean-aligned per subject and cap when asked."""
    if align == "none":
        return task.x
    return euclidean_align(task.x, task.subject, task.channel_mask, window_layouts(task))


def window_tensors(task: TaskSet, align: str,
                   subject_ids: np.ndarray | None = None) -> WindowTensors:
    """The encoder's input for every window of ``task``, aligned as ``align`` asks."""
    return WindowTensors(task.y, x=aligned_windows(task, align), coords=task.coords,
                         ref_coords=task.ref_coords, channel_mask=task.channel_mask,
                         subject_ids=subject_ids)


def predict_windows(model: EncoderClassifier, task: TaskSet, align: str,
                    batch_size: int, fabric: Fabric | None = None) -> np.ndarray:
    """Class probabilities ``(N, K)`` of a fine-tuned model on every window of ``task``, in
    batches on the fabric's device and precision.

    The windows are aligned as the model was trained (``align``), per subject, from the
    subject's own windows.
    """
    data = window_tensors(task, align)
    return _softmax(predict_logits(model, data, np.arange(len(task)), batch_size, fabric))


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


# ------------------------------------------------------------------------------ encoders
class EncoderFoldModel(FoldModel):
    """``pretrained`` (the checkpoint's encoder) or ``random_init`` (same architecture, fresh)."""

    def __init__(self, key: str, align: str, ctx: RunContext, reference: torch.nn.Module):
        super().__init__(key, align, ctx)
        cfg, task = ctx.cfg, ctx.task
        self.reference = reference
        self.subject_ids = np.unique(task.subject, return_inverse=True)[1].astype(np.int64)
        self.signal = window_tensors(task, align, self.subject_ids)
        self.frozen = cfg.frozen
        self.shared_encoder = self.new_encoder() if self.frozen else None
        cache_mb = (task.x.shape[0] * task.x.shape[1] * (task.x.shape[2] // reference.patch_len)
                    * reference.embed_dim * 4 / 2**20)
        self.cached = (self.frozen and not self.new_head(0).needs_pair_view
                       and cache_mb <= cfg.token_cache_mb)
        self.data = self.signal
        if self.cached:
            tokens, token_mask = encode_windows(self.shared_encoder, self.signal,
                                                cfg.train.eval_batch_size, cfg.progress,
                                                ctx.fabric)
            self.data = WindowTensors(task.y, tokens=tokens, token_mask=token_mask,
                                      subject_ids=self.subject_ids)
        self.model: EncoderClassifier | None = None
        self.chosen_c: list[float] = []  # probe: logistic, one per fold
        self.probe_features: np.ndarray | None = None
        self.energy: list[tuple[int, dict]] = []
        self.routing_rows: list[dict[str, Any]] = []
        self.routing_matrix: list[tuple[str, list[float]]] = []

    def new_encoder(self) -> torch.nn.Module:
        """A copy of the checkpoint's encoder, or the architecture with a fixed random init."""
        if self.key == "pretrained":
            return copy.deepcopy(self.reference)
        torch.manual_seed(seed_of(self.ctx.cfg.seed, self.key, "encoder"))
        return type(self.reference)(**self.reference.config)

    def new_head(self, seed: int) -> Head:
        """The configured head, initialised from ``seed``."""
        cfg = self.ctx.cfg
        torch.manual_seed(seed)
        try:
            return create_head(cfg.head, self.reference.embed_dim, self.ctx.task.n_classes,
                               cfg.spiking, **cfg.head_options)
        except TypeError as error:  # an option the head does not take
            raise ValueError(f"head {cfg.head!r}, head_options {cfg.head_options}: {error}"
                             ) from error

    def _build(self, rows: np.ndarray, seed: int) -> tuple[EncoderClassifier, np.ndarray | None]:
        encoder = self.shared_encoder if self.frozen else self.new_encoder()
        model = EncoderClassifier(encoder, self.new_head(seed), frozen=self.frozen)
        pair = None
        if model.head.needs_pair_view or self.ctx.cfg.augment_windows:
            model.augment = make_view_augmenter(self.ctx.task.sfreq, seed=seed,
                                                **self.ctx.cfg.augment)
        if model.head.needs_pair_view:
            pair = neighbour_index(self.ctx.task.recording_id, self.ctx.task.start, rows)
        if type(model.head).init_from_features is not Head.init_from_features:
            tokens, mask = self._tokens(model, rows)
            model.head.init_from_features(masked_mean_pool(tokens, mask),
                                          torch.as_tensor(self.subject_ids[rows]))
        return model, pair

    def fit(self, split: Split, seed: int) -> FitResult | None:
        """Head (and encoder unless frozen) trained on the split's training windows; with
        ``probe: logistic`` the head is first solved (C picked on the validation windows),
        which is the whole fit when the encoder is frozen."""
        self.model, pair = self._build(split.train, seed)
        cfg = self.ctx.cfg
        if cfg.solves_head:
            self.chosen_c.append(self._solve_probe(self.model, split.train, split.val,
                                                   cfg.classical.c_grid))
            if cfg.solved_probe:
                return None
        result = _fit(self.model, self.data, split.train, split.val, self, seed, split.fold,
                      lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, pair=pair,
                      keep_start=cfg.solves_head, wise=cfg.wise)
        if cfg.refit and len(split.val):
            rows = np.concatenate([split.train, split.val])
            self.model = self._refit(rows, seed, split.fold,
                                     self.chosen_c[-1] if cfg.solves_head else None,
                                     result.best_epoch)
        return result

    def _refit(self, rows: np.ndarray, seed: int, fold: int, c: float | None,
               epochs: int) -> EncoderClassifier:
        """A model trained on ``rows`` without validation: the probe solved with ``c`` (None:
        not solved), then ``epochs`` epochs of the loop (0: none)."""
        cfg = self.ctx.cfg
        model, pair = self._build(rows, seed)
        if c is not None:
            self._solve_probe(model, rows, np.zeros(0, dtype=np.int64), [c])
        if epochs:
            _fit(model, self.data, rows, np.zeros(0, dtype=np.int64), self, seed, fold,
                 lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, pair=pair,
                 stop_after=epochs, refit=True, wise=cfg.wise)
        return model

    def _solve_probe(self, model: EncoderClassifier, train: np.ndarray, val: np.ndarray,
                     grid: list[float]) -> float:
        """Make the model's head the logistic regression of the classical baselines on its own
        input features (C picked on ``val``, then refit on ``train`` + ``val`` when the probe is
        the whole fit, kept on ``train`` before LP-FT); the chosen C."""
        head = model.head
        if not isinstance(head, LinearHead):
            raise TypeError(f"probe: logistic solves a linear head, not {type(head).__name__}")
        if self.probe_features is None:  # every fit starts from the same encoder: one pass
            rows = np.arange(len(self.ctx.task))
            step = self.ctx.cfg.train.eval_batch_size
            with torch.no_grad():
                self.probe_features = np.concatenate([
                    head.features(*self._tokens(model, rows[s:s + step])).double().numpy()
                    for s in range(0, len(rows), step)])
        # LP-FT stops early on `val`: a head refit on it would make the start look best there
        pipeline, c = fit_with_validation(logistic_probe(grid[0]), self.probe_features,
                                          self.ctx.task.y, train, val, grid,
                                          refit_on_val=self.ctx.cfg.solved_probe)
        weight, bias = logistic_as_linear(pipeline, self.ctx.task.n_classes)
        head.set_linear(torch.as_tensor(weight, dtype=torch.float32),
                        torch.as_tensor(bias, dtype=torch.float32))
        return c

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Softmax of the fitted model's logits."""
        return _softmax(predict_logits(self.model, self.data, rows,
                                       self.ctx.cfg.train.eval_batch_size, self.ctx.fabric))

    def _tokens(self, model: EncoderClassifier, rows: np.ndarray
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and valid mask of ``rows`` (from the cache, or an encoder pass without grad)."""
        if self.data.tokens is not None:
            batch = self.data.batch(rows)
            return batch.tokens, batch.channel_mask
        batch_size = self.ctx.cfg.train.eval_batch_size
        outs, masks = [], []
        width = int(self.data.channel_mask[rows].sum(1).max())
        model.eval()
        fabric = self.ctx.fabric
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                with autocast(fabric):
                    tokens, mask = model.encode(
                        on_device(self.data.batch(rows[s:s + batch_size]), fabric))
                pad = width - tokens.shape[1]
                outs.append(torch.nn.functional.pad(tokens.float().cpu(), (0, 0, 0, 0, 0, pad)))
                masks.append(torch.nn.functional.pad(mask.cpu(), (0, pad)))
        return torch.cat(outs), torch.cat(masks)

    def after_fold(self, split: Split) -> None:
        """Spiking energy and routing diagnostics on the fold's test windows."""
        head = self.model.head
        routed = isinstance(head, SharedRoutedHead) and head.has_routed
        if self.ctx.cfg.spiking == "none" and not routed:
            return
        tokens, mask = self._tokens(self.model, split.test)
        if self.ctx.cfg.spiking != "none":
            self.energy.append((split.fold, energy_report(head, tokens[:ENERGY_WINDOWS],
                                                          mask[:ENERGY_WINDOWS])))
        if routed:
            h = masked_mean_pool(tokens, mask)
            names, codes = np.unique(self.ctx.task.subject[split.test], return_inverse=True)
            codes = torch.as_tensor(codes)
            self.routing_rows.append({
                "fold": split.fold, "test_subjects": ",".join(map(str, split.test_subjects)),
                **head.routing_diagnostics(h, codes)})
            ids, weights = head.routing_matrix(h, codes)
            for i, w in zip(ids.tolist(), weights.tolist(), strict=True):
                label = (str(names[i]) if split.protocol != "within"
                         else f"{names[i]} (fold {split.fold})")
                self.routing_matrix.append((label, w))

    def extras(self) -> dict[str, Any]:
        """Spiking energy tables and the routing matrix, when the head has them."""
        extras: dict[str, Any] = {}
        if self.energy:
            extras.update(energy_tables(self.energy))
        if self.routing_rows:
            extras["routing diagnostics (test subjects)"] = self.routing_rows
            extras["routing matrix"] = {
                "matrix": [m for _, m in self.routing_matrix],
                "row_labels": [r for r, _ in self.routing_matrix],
                "col_labels": [f"expert {e}" for e in range(len(self.routing_matrix[0][1]))],
                "title": f"{self.display}: mean routing weight per test subject",
                "colorbar_label": "weight"}
        return extras

    def info(self) -> dict[str, Any]:
        """Encoder origin, head, mode and parameter counts."""
        cfg = self.ctx.cfg
        origin = "checkpoint" if self.key == "pretrained" else "random init"
        mode = ("frozen encoder" + (" (tokens cached)" if self.cached else "") if self.frozen
                else "full fine-tuning")
        probe = {}
        if cfg.solves_head:
            mode += (", logistic probe (C chosen on validation subjects)" if self.frozen else
                     " from the solved logistic probe (LP-FT)")
            probe = {"chosen_C": ",".join(f"{c:g}" for c in self.chosen_c)}
        if cfg.refit and not cfg.solved_probe:
            mode += REFIT_MODE
        if cfg.wise is not None:
            mode += f", weights averaged with the start (WiSE-FT, {cfg.wise:g} x fine-tuned)"
        model = self.model if self.model is not None else EncoderClassifier(
            self.new_encoder(), self.new_head(0), frozen=self.frozen)
        return {"model": f"eegfm encoder ({origin})", "head": cfg.head, "spiking": cfg.spiking,
                "mode": mode, "alignment": _alignment_text(self.align, "encoder"),
                "params": _n_params(model), "trainable_params": _n_params(model, trainable=True),
                **probe}

    def save(self, fits: list[FitResult]) -> str:
        """Train on every window for the median selected epoch count; save the model folder
        ``model_<tag>/``."""
        ctx, cfg, task = self.ctx, self.ctx.cfg, self.ctx.task
        seed = seed_of(cfg.seed, self.key, "final")
        c = float(np.median(self.chosen_c)) if cfg.solves_head else None
        # 0 only when LP-FT kept its start (best_epoch 0) in most folds: the probe is saved
        epochs = 0 if cfg.solved_probe else round(float(np.median([f.best_epoch for f in fits])))
        model = self._refit(np.arange(len(task)), seed, -1, c, epochs)
        fitted: dict[str, Any] = {} if c is None else {"probe": "logistic", "C": c}
        if not cfg.solved_probe:
            fitted["epochs"] = epochs
        path = ctx.out / f"model_{self.tag}"
        stride = ((cfg.task.stride_s or task.window_s) if cfg.task.type == "recording"
                  else task.window_s)
        save_finetuned(path, model.eval(), class_names=task.class_names, window_s=task.window_s,
                       stride_s=stride, sfreq=task.sfreq, prep_config=ctx.prep_config,
                       align=self.align,
                       extra={"task": task.name, "model": self.key, **fitted,
                              "n_windows": len(task),
                              "subjects": sorted(set(task.subject.tolist()))})
        return path.name


# ------------------------------------------------------------------------------ networks
class NetworkFoldModel(FoldModel):
    """A braindecode-style network trained from scratch on the channels common to all windows."""

    def __init__(self, key: str, align: str, ctx: RunContext, channels: list[str]):
        super().__init__(key, align, ctx)
        task = ctx.task
        x = task.channel_matrix(channels)
        if align != "none":
            x = euclidean_align(x, task.subject)
        n = len(task)
        self.data = WindowTensors(task.y, x=x, coords=np.zeros((n, len(channels), 3), np.float32),
                                  ref_coords=np.zeros((n, len(channels), 3), np.float32),
                                  channel_mask=np.ones((n, len(channels)), bool))
        self.n_chans = len(channels)
        self.model: BraindecodeClassifier | None = None

    def _new(self) -> BraindecodeClassifier:
        cfg, task = self.ctx.cfg, self.ctx.task
        return BraindecodeClassifier(self.key, self.n_chans, task.n_classes, task.x.shape[-1],
                                     task.sfreq, input_scale_uv=cfg.baselines.input_scale_uv,
                                     **dict(getattr(cfg.baselines, self.key)))

    def fit(self, split: Split, seed: int) -> FitResult:
        """The network trained from scratch, early-stopped on the validation subjects (then,
        with ``refit``, trained again on training + validation subjects for that many
        epochs)."""
        result = self._train(split.train, split.val, seed, split.fold)
        if self.ctx.cfg.refit and len(split.val):
            self._train(np.concatenate([split.train, split.val]), np.zeros(0, dtype=np.int64),
                        seed, split.fold, stop_after=result.best_epoch)
        return result

    def _train(self, train: np.ndarray, val: np.ndarray, seed: int, fold: int,
               stop_after: int | None = None) -> FitResult:
        """A fresh network (``self.model``) trained on ``train``; ``stop_after``: a refit."""
        cfg = self.ctx.cfg
        torch.manual_seed(seed)
        self.model = self._new()
        return _fit(self.model, self.data, train, val, self, seed, fold,
                    lr=cfg.baselines.lr or cfg.train.lr,
                    weight_decay=cfg.baselines.weight_decay,
                    epochs=cfg.baselines.epochs or cfg.train.epochs, stop_after=stop_after,
                    refit=stop_after is not None)

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Softmax of the fitted network's logits."""
        return _softmax(predict_logits(self.model, self.data, rows,
                                       self.ctx.cfg.train.eval_batch_size, self.ctx.fabric))

    def info(self) -> dict[str, Any]:
        """Network class, alignment and parameter counts."""
        model = self.model if self.model is not None else self._new()
        origin = "eegfm" if self.key == "dbconformer" else "braindecode"
        return {"model": f"{origin} {model.name} (from scratch)", "head": "-", "spiking": "none",
                "mode": "trained from scratch" + (REFIT_MODE if self.ctx.cfg.refit else ""),
                "alignment": _alignment_text(self.align, "network"),
                "params": _n_params(model), "trainable_params": _n_params(model, trainable=True)}


# ------------------------------------------------------------------------------ classical
class ClassicalFoldModel(FoldModel):
    """Log band power + LR or tangent space + LR on the channels common to all windows."""

    KINDS: ClassVar[dict[str, str]] = {"bandpower_lr": "bandpower", "tangent_lr": "tangent"}

    def __init__(self, key: str, align: str, ctx: RunContext, channels: list[str]):
        super().__init__(key, align, ctx)
        task, cfg = ctx.task, ctx.cfg
        started = time.perf_counter()
        self.kind = self.KINDS[key]
        self.features = classical_features(
            self.kind, task.channel_matrix(channels), task.subject, task.sfreq,
            aligned=align != "none", bands=cfg.classical.bands)
        self.feature_s = time.perf_counter() - started
        self.pipeline: Pipeline | None = None
        self.chosen_c: list[float] = []

    def fit(self, split: Split, seed: int) -> None:
        """Pick LR's ``C`` on the validation subjects, refit on training + validation."""
        self.pipeline, c = fit_with_validation(
            classical_pipeline(self.kind), self.features, self.ctx.task.y, split.train,
            split.val, self.ctx.cfg.classical.c_grid)
        self.chosen_c.append(c)
        return None

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """LR probabilities, one column per class of the task (absent classes get 0)."""
        proba = np.zeros((len(rows), self.ctx.task.n_classes))
        proba[:, self.pipeline.classes_] = self.pipeline.predict_proba(self.features[rows])
        return proba

    def _n_coefficients(self) -> int:
        """Weights and intercepts of the last fitted logistic regression (0 before a fit)."""
        if self.pipeline is None:
            return 0
        classifier = self.pipeline.steps[-1][1]
        return int(classifier.coef_.size + classifier.intercept_.size)

    def info(self) -> dict[str, Any]:
        """Pipeline steps, the C chosen per fold and feature time."""
        steps = (" → ".join(name for name, _ in self.pipeline.steps)
                 if self.pipeline is not None else "")
        features = ("log10 Welch band power per channel" if self.kind == "bandpower"
                    else "OAS covariance")
        return {"model": f"{features} → {steps} (scikit-learn/pyriemann)", "head": "-",
                "spiking": "none", "mode": "classical (C chosen on validation subjects)",
                "alignment": _alignment_text(self.align, self.key),
                "params": self._n_coefficients(), "trainable_params": self._n_coefficients(),
                "chosen_C": ",".join(f"{c:g}" for c in self.chosen_c),
                "feature_s": round(self.feature_s, 1)}


def _alignment_text(align: str, family: str) -> str:
    return "none" if align == "none" else ALIGNMENT_FORM[family]


def build_fold_model(ctx: RunContext, key: str, align: str,
                     encoder: torch.nn.Module | None = None) -> FoldModel | None:
    """The :class:`FoldModel` of ``key`` under ``align``; None (with a note) when impossible.

    ``encoder`` is the reference encoder of ``pretrained`` / ``random_init``. Fixed-montage
    models (classical, networks) are skipped when the recordings share no channel.
    """
    if key in ("pretrained", "random_init"):
        return EncoderFoldModel(key, align, ctx, encoder)
    channels = ctx.task.common_channels()
    if not channels:
        note = (f"{DISPLAY[key]} skipped: the recordings share no channel name, and it needs "
                "one fixed montage.")
        if note not in ctx.notes:
            ctx.notes.append(note)
        return None
    if key in ClassicalFoldModel.KINDS:
        return ClassicalFoldModel(key, align, ctx, channels)
    return NetworkFoldModel(key, align, ctx, channels)

"""LightningModule for masked pretraining of an `EEGEncoder` from the registry.

Per-step randomness (masks, dropout) is a function of (seed, global_step, rank): the module
reseeds torch at the start of every training step, so a resumed run draws exactly what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from eegfm.config import PretrainConfigError
from eegfm.models import MASK_KINDS, MaskedPretrainer, create_model
from eegfm.training.optim import WarmupCosine, param_groups


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit torch seed for one (seed, step, rank), decorrelated across all three."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """Sum ``value`` (in place) over the default process group's ranks; as is without one."""
    # not `strategy.reduce`: Lightning puts a barrier before each all-reduce, and an NCCL
    # barrier blocks the host until the GPU reaches it; the all-reduce alone is only queued
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
    return value


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` drops a step itself when given ``found_inf`` (a fused Adam/AdamW)."""
    # the fused kernel leaves parameters, moments and step counts alone when found_inf is 1, as
    # under a GradScaler: a skip then needs no decision on the host
    return bool(optimizer.defaults.get("fused"))


class MaskedPretrainModule(L.LightningModule):
    """Masked pretraining of a registry encoder with AdamW and a warm-up + cosine schedule.

    Args:
        encoder: registry name (`eegfm.list_models()`).
        encoder_overrides: keyword overrides for `create_model` (depth, embed_dim, ...).
        pretrainer: keyword options of `MaskedPretrainer` (mask ratio, mask kinds, decoder...).
        lr: peak learning rate (after warm-up).
        weight_decay: AdamW weight decay on weight matrices.
        betas: AdamW betas.
        warmup_steps: linear warm-up length in optimizer steps.
        min_lr_ratio: final LR as a fraction of `lr` at the end of the cosine.
        total_steps: cosine length; None: the trainer's `max_steps` (or its step estimate).
        seed: with the global step and rank, seeds the masks and dropout of each step.
        nonfinite: on a NaN/Inf gradient (checked after DDP's all-reduce, so every rank
            decides alike): 'skip' drops that update and goes on, 'raise' stops with an error.
            With a fused AdamW the update is dropped on the device (its `found_inf` input) and
            the host reads the counts only every `nonfinite_check_every_n_steps` steps, at
            checkpoints and at the end, so a GPU step never waits for the check; 'raise' then
            stops at the next read, naming the first bad step (the bad updates were skipped).
        max_consecutive_nonfinite: with 'skip', fail after this many bad steps in a row.
        nonfinite_check_every_n_steps: how often a fused AdamW's skip counts are read.
        compile_mode: `torch.compile` each transformer block with this mode ("default",
            "reduce-overhead" for CUDA graphs, "max-autotune"; None: eager). On GPU it fuses
            the norms, permutes and element-wise work between matrix products; the first steps
            (and each new channel count) pay the compile.
        fused_adamw: AdamW's fused single-kernel step (None: on CUDA). Gradient clipping then
            runs here (`configure_gradient_clipping`), since Lightning refuses to clip for an
            optimizer that could unscale gradients itself.
    """

    def __init__(
        self,
        encoder: str = "eegfm_tiny",
        encoder_overrides: dict[str, Any] | None = None,
        pretrainer: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        total_steps: int | None = None,
        seed: int = 0,
        nonfinite: Literal["skip", "raise"] = "skip",
        max_consecutive_nonfinite: int = 20,
        nonfinite_check_every_n_steps: int = 50,
        compile_mode: str | None = None,
        fused_adamw: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model = create_model(encoder, **(encoder_overrides or {}))
        self.pretrainer = MaskedPretrainer(model, **(pretrainer or {}))
        if compile_mode is not None:
            for block in self.encoder.blocks:
                # in place: parameter names and checkpoints stay the same
                block.compile(mode=compile_mode)
        self.step_metrics: dict[str, Any] = {}
        self._metric_keys: list[str] | None = None
        self.nonfinite_steps = 0  # total skipped updates read so far (kept in checkpoints)
        # on the device until read: skipped updates since the last read, the current and the
        # longest run of them, and the first skipped step (-1: none)
        self._nonfinite_counts: torch.Tensor | None = None

    @property
    def encoder(self) -> nn.Module:
        """The encoder being pretrained (owned by the pretrainer)."""
        return self.pretrainer.encoder

    @property
    def patch_len(self) -> int:
        """Samples per patch token of the encoder."""
        return int(self.encoder.patch_len)

    def setup(self, stage: str) -> None:
        """Check that the data matches the encoder (sampling rate, window vs patch length)."""
        data = getattr(self.trainer, "datamodule", None)
        if data is None or not hasattr(data, "sfreq"):
            return
        if abs(float(data.sfreq) - float(self.encoder.sfreq)) > 1e-6:
            raise PretrainConfigError(
                f"shards are at {data.sfreq} Hz but encoder {self.hparams.encoder!r} expects "
                f"{self.encoder.sfreq} Hz: re-run `eegfm prep` at that rate or set "
                "model.encoder_overrides.sfreq"
            )
        if data.window_samples % self.patch_len:
            raise PretrainConfigError(
                f"data.window_s gives {data.window_samples} samples, not a multiple of the "
                f"encoder's patch_len {self.patch_len}: choose a window of whole patches"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One masked-reconstruction step; stores its metrics in `step_metrics`."""
        torch.manual_seed(step_seed(self.hparams.seed, self.global_step, self.global_rank))
        loss, parts = self.pretrainer(
            batch["x"], batch["coords"], batch["channel_mask"], batch["ref_coords"]
        )
        metrics = self._mean_over_ranks({"loss": loss, **parts})
        metrics["lr"] = self.optimizers().param_groups[0]["lr"]
        self.step_metrics = metrics
        # a progress-bar value is read back every step: only worth it with a bar to show it
        self.log("train/loss", metrics["loss"], batch_size=batch["x"].shape[0],
                 prog_bar=self.trainer.progress_bar_callback is not None)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Read the non-finite counts when due (every step unless the optimizer skips itself)."""
        every = max(1, int(self.hparams.nonfinite_check_every_n_steps))
        if not _skips_on_device(self.optimizers().optimizer) or self.global_step % every == 0:
            self.check_nonfinite()

    def on_train_end(self) -> None:
        """Read the last non-finite counts."""
        self.check_nonfinite()

    def _mean_over_ranks(self, values: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Step metrics under a fixed set of keys, averaged over DDP ranks (one all-reduce).

        A mask kind absent from a batch is NaN here; across ranks the mean skips it.
        """
        if self._metric_keys is None:
            kinds = {f"loss_{name}" for name in MASK_KINDS}
            self._metric_keys = ["loss", *sorted((set(values) | kinds) - {"loss"})]
        device = values["loss"].device
        nan = torch.full((), float("nan"), device=device)  # filled there, not copied from host
        stacked = torch.stack(
            [
                torch.as_tensor(values.get(k, nan), device=device).detach().float().reshape(())
                for k in self._metric_keys
            ]
        )
        if self.trainer.world_size > 1:
            present = torch.isfinite(stacked)
            both = torch.stack([torch.where(present, stacked, 0.0), present.float()])
            both = sum_over_ranks(both)
            stacked = both[0] / both[1]  # 0/0 -> NaN where no rank had the kind
        return dict(zip(self._metric_keys, stacked.unbind(), strict=True))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Guard against NaN/Inf gradients (before clipping); log the gradient norm."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        # one multi-tensor kernel rather than one norm per parameter (hundreds of launches)
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if isinstance(self.trainer.strategy, (FSDPStrategy, ModelParallelStrategy)):
            # each rank holds a shard of every gradient: the norm is over all of them
            norm = sum_over_ranks(norm.square()).sqrt()
        self.step_metrics["grad_norm"] = norm.detach()
        if self.trainer.precision == "16-mixed":  # the GradScaler handles overflow itself
            return
        bad = (~torch.isfinite(norm)).float()
        if self.trainer.world_size > 1:
            bad = (sum_over_ranks(bad) > 0).float()
        self.step_metrics["skipped"] = bad
        self._count_nonfinite(bad)
        if _skips_on_device(optimizer):
            optimizer.found_inf = bad
        elif bool(bad):
            optimizer.zero_grad(set_to_none=True)

    def _count_nonfinite(self, bad: torch.Tensor) -> None:
        """Update the device-side counts with this step's 0/1 ``bad``."""
        if self._nonfinite_counts is None:
            self._nonfinite_counts = torch.tensor([0, 0, 0, -1], device=bad.device)
        total, run, longest, first = self._nonfinite_counts.unbind()
        is_bad = bad.long()
        run = (run + 1) * is_bad
        first = torch.where((first < 0) & (is_bad > 0), self.global_step, first)
        self._nonfinite_counts = torch.stack([total + is_bad, run, torch.maximum(longest, run),
                                              first])

    def check_nonfinite(self) -> None:
        """Read the non-finite counts (one host sync), then skip with a warning or raise."""
        if self._nonfinite_counts is None:
            return
        counts = self._nonfinite_counts
        total, _, longest, first = counts.tolist()
        # start the next span: nothing skipped yet, the current run carries over
        run = counts[1]
        self._nonfinite_counts = torch.stack([run * 0, run, run, run * 0 - 1])
        if not total:
            return
        self.nonfinite_steps += total
        where = f"step {first} (total {self.nonfinite_steps} non-finite steps)"
        if self.hparams.nonfinite == "raise":
            raise FloatingPointError(
                f"non-finite gradient at {where}: lower model.lr, check the shards with "
                "`eegfm validate`, or set model.nonfinite=skip"
            )
        if longest > self.hparams.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"{longest} non-finite gradients in a row (first at {where}): training "
                "diverged; lower model.lr or raise model.warmup_steps"
            )
        rank_zero_warn(f"non-finite gradient at {where}: {total} update(s) skipped")

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by global norm with the norm `on_before_optimizer_step` measured.

        Without a gradient scaler (fp32, bf16) gradients are already unscaled, so clipping is
        valid for a fused AdamW too; fp16 with its scaler keeps Lightning's own clipping.
        """
        norm = self.step_metrics.get("grad_norm")
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if (not gradient_clip_val or norm is None or scaler is not None
                or gradient_clip_algorithm not in (None, "norm")):
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:  # empty after a skipped (non-finite) step
            # as torch.nn.utils.clip_grad_norm_: scale only when the norm exceeds the limit
            torch._foreach_mul_(grads, (gradient_clip_val / (norm + 1e-6)).clamp(max=1.0))

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over decay / no-decay groups with a per-step warm-up + cosine schedule."""
        hp = self.hparams
        total = hp.total_steps
        if total is None:
            total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        if total is None:
            total = int(self.trainer.estimated_stepping_batches)
        groups = param_groups(self.pretrainer, hp.weight_decay)
        fused = hp.fused_adamw
        if fused is None:  # one kernel for all parameters on GPU; fp16's scaler clips itself
            fused = self.device.type == "cuda" and self.trainer.precision != "16-mixed"
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused)
        schedule = WarmupCosine(int(hp.warmup_steps), int(total), float(hp.min_lr_ratio))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the non-finite step count (read so far and pending) across restarts."""
        pending = 0 if self._nonfinite_counts is None else int(self._nonfinite_counts[0])
        checkpoint["eegfm_nonfinite_steps"] = self.nonfinite_steps + pending

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the non-finite step count."""
        self.nonfinite_steps = int(checkpoint.get("eegfm_nonfinite_steps", 0))

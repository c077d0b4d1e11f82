"""Pretraining pieces that need no trainer: CSV log, schedule, optimizer groups, seeds, CLI
shortcuts, resume selection and the DataLoader's mid-epoch state."""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from eegfm.cli.pretrain import expand_shortcuts, resolve_resume
from eegfm.data.collate import pad_collate
from eegfm.data.windows import DistributedWindowBatchSampler, ShardWindowDataset, WindowIndex
from eegfm.training.optim import WarmupCosine, param_groups
from eegfm.training.pretrain.datamodule import ResumableDataLoader
from eegfm.training.pretrain.metrics_csv import ResumableCSV, read_csv_rows
from eegfm.training.pretrain.module import step_seed


def test_csv_appends_grows_columns_and_truncates(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    log = ResumableCSV(path)
    for step in (1, 2):
        log.append({"step": step, "loss": torch.tensor(1.0 / step)})
    log.flush()
    log.append({"step": 3, "loss": 0.25, "lr": torch.tensor(0.5, dtype=torch.float64)})
    log.flush()
    rows = read_csv_rows(path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["loss"] == 0.5 and math.isnan(rows[0]["lr"]) and rows[2]["lr"] == 0.5

    reopened = ResumableCSV(path)  # a requeued job: keeps the file and its header
    assert reopened.fieldnames == ["step", "loss", "lr"]
    assert reopened.truncate_after(1) == 2
    reopened.append({"step": 2, "loss": 9.0, "lr": 1.0})
    reopened.flush()
    assert [(r["step"], r["loss"]) for r in read_csv_rows(path)] == [(1, 1.0), (2, 9.0)]
    with pytest.raises(ValueError, match="no 'step'"):
        reopened.append({"loss": 1.0})


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)
    factors = [schedule(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


def test_schedule_state_keeps_its_length_when_a_run_resumes_with_other_max_steps(
        tmp_path: Path) -> None:
    """docs/pretrain.md: the schedule's fields are saved with LambdaLR's state, "its length is
    fixed at the first start". A run planned for 300 steps, stopped after 30 (past the 20
    warm-up steps) and restored into a module whose trainer now says 45 steps, continues with
    the learning rates of the 300-step schedule (through a weights_only checkpoint file)."""
    from eegfm.training.pretrain.module import MaskedPretrainModule

    def scheduler(max_steps: int):
        module = MaskedPretrainModule(lr=2e-3, warmup_steps=20, min_lr_ratio=0.1)
        module._trainer = SimpleNamespace(max_steps=max_steps, precision="32-true")
        return module.configure_optimizers()["lr_scheduler"]["scheduler"]

    planned = scheduler(300)
    lrs = []
    for _ in range(60):
        lrs.append(planned.get_last_lr()[0])
        planned.optimizer.step()  # no gradients: no update, keeps torch's order warning away
        planned.step()
    stopped = scheduler(300)
    for _ in range(30):
        stopped.optimizer.step()
        stopped.step()
    torch.save({"lr_schedulers": [stopped.state_dict()]}, tmp_path / "s.ckpt")
    resumed = scheduler(45)
    resumed.load_state_dict(torch.load(tmp_path / "s.ckpt", weights_only=True)["lr_schedulers"][0])
    tail = []
    for _ in range(30):
        tail.append(resumed.get_last_lr()[0])
        resumed.optimizer.step()
        resumed.step()
    assert tail == lrs[30:]
    assert scheduler(45).lr_lambdas[0](40) != planned.lr_lambdas[0](40)  # the check can fail


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.table = nn.Embedding(3, 4)
        self.mask_token = nn.Parameter(torch.zeros(1, 4))
        self.pos = nn.Parameter(torch.zeros(5, 4))

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def test_no_weight_decay_on_norms_biases_embeddings_tokens() -> None:
    model = _Toy()
    decay, plain = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"proj.weight"}
    assert decay["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert {names[id(p)] for p in plain["params"]} == {
        "proj.bias",
        "norm.weight",
        "norm.bias",
        "table.weight",
        "mask_token",
        "pos",
    }


def test_step_seeds_differ_by_seed_step_and_rank() -> None:
    seeds = {step_seed(s, t, r) for s in range(3) for t in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4
    assert step_seed(1, 2, 3) == step_seed(1, 2, 3) < 2**63


def test_data_shortcut_becomes_roots() -> None:
    argv = ["--config", "c.yaml", "--data", "a", "b c", "--trainer.max_steps", "5", "--data=d"]
    assert expand_shortcuts(argv) == [
        "--config",
        "c.yaml",
        '--data.roots=["a", "b c"]',
        "--trainer.max_steps",
        "5",
        '--data.roots=["d"]',
    ]
    assert expand_shortcuts(["--data", "data.yaml"]) == ["--data", "data.yaml"]
    assert expand_shortcuts(["--data.batch_size", "4"]) == ["--data.batch_size", "4"]


def test_resume_picks_the_newest_checkpoint(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({}, last)  # readable: resume passes over unreadable checkpoints
    assert resolve_resume("auto", tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    torch.save({}, hpc)
    os.utime(hpc, (time.time() + 5, time.time() + 5))  # written by the SLURM signal handler
    assert resolve_resume("auto", tmp_path) == str(hpc)
    assert resolve_resume("never", tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        resolve_resume(str(tmp_path / "nope.ckpt"), tmp_path)


class _Reader:
    def read_window(self, recording_id: str, start: int, length: int) -> SimpleNamespace:
        data = np.full((2, length), start, np.float32)
        return SimpleNamespace(data=data, coords=np.zeros((2, 3)), ref_coords=np.zeros((2, 3)))


def _loader(workers: int = 0) -> ResumableDataLoader:
    entries = [
        SimpleNamespace(
            recording_id=f"r{i}",
            dataset="d",
            montage_id="m",
            n_channels=2,
            n_samples=800 * (5 + i),
            sfreq=200.0,
        )
        for i in range(6)
    ]
    index = WindowIndex(entries, 800)
    sampler = DistributedWindowBatchSampler(index, 4, seed=1)
    dataset = ShardWindowDataset(_Reader(), index)
    return ResumableDataLoader(dataset, sampler, num_workers=workers, collate_fn=pad_collate)


def _starts(batches: list[dict]) -> list[list[int]]:
    return [b["start"].tolist() for b in batches]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_state_resumes_mid_epoch(workers: int) -> None:
    loader = _loader(workers)
    loader.batch_sampler.set_epoch(2)
    full = list(loader)
    partial = []
    for batch in loader:
        partial.append(batch)
        if len(partial) == 3:
            break
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 3
    resumed = _loader(workers)
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(2)
    assert _starts(partial + list(resumed)) == _starts(full)
    assert _starts(list(resumed)) == _starts(full), "the next epoch pass starts from batch 0"


def test_loader_state_saved_on_an_epochs_last_batch_resumes_into_the_next_epoch() -> None:
    """docs/pretrain.md: a checkpoint taken on the last batch of an epoch resumes into an empty
    remainder and the next epoch starts afresh."""
    loader = _loader()
    loader.batch_sampler.set_epoch(2)
    full = list(loader)
    state = loader.state_dict()
    assert (state["epoch"], state["batches_done"]) == (2, len(full))
    fresh = _loader()
    fresh.batch_sampler.set_epoch(3)
    next_epoch = list(fresh)
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(2)
    assert list(resumed) == []
    resumed.batch_sampler.set_epoch(3)
    assert _starts(list(resumed)) == _starts(next_epoch) != _starts(full)


def _batches(n: int = 4) -> list[dict]:
    """Tiny in-memory batches (2 windows, 3 channels, 2 s)."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "x": torch.randn(2, 3, 400, generator=g) * 10,
            "coords": torch.randn(2, 3, 3, generator=g) * 0.05,
            "ref_coords": torch.full((2, 3, 3), float("nan")),
            "channel_mask": torch.ones(2, 3, dtype=torch.bool),
        }
        for _ in range(n)
    ]


def _cpu_trainer(tmp_path: Path, max_steps: int, **kwargs: Any):
    """A quiet single-process CPU trainer (no logger, checkpoints, bar or summary)."""
    import lightning as L

    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_nonfinite_gradient_is_skipped_or_raises(mode: str, fused: bool, tmp_path: Path) -> None:
    """A NaN gradient skips its update: by the host (plain AdamW) or on the device (fused AdamW,
    counts read every 50 steps and at the end, so 'raise' stops at the end of this short run)."""
    import lightning as L

    from eegfm.training.pretrain.module import MaskedPretrainModule

    torch.manual_seed(0)
    module = MaskedPretrainModule(warmup_steps=1, nonfinite=mode, max_consecutive_nonfinite=5,
                                  fused_adamw=fused)
    trainer = _cpu_trainer(tmp_path, 4)
    before: dict[str, torch.Tensor] = {}
    steps_seen: list[int] = []

    class PoisonStep2(L.Callback):
        """A NaN gradient in step 3 (batch 2), as a bf16 overflow would leave it."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 2:
                before.update({k: v.clone() for k, v in pl_module.state_dict().items()})

        def on_after_backward(self, trainer, pl_module) -> None:
            if trainer.fit_loop.epoch_loop.batch_idx == 2:
                next(p for p in pl_module.parameters() if p.grad is not None).grad[0] = torch.nan

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            steps_seen.append(trainer.global_step)
            if batch_idx == 2:
                assert pl_module.step_metrics["skipped"] == 1.0
                for k, v in pl_module.state_dict().items():
                    assert torch.equal(v, before[k]), f"{k} changed by a skipped update"
                if fused:
                    state = pl_module.optimizers().optimizer.state
                    assert all(int(s["step"]) == 2 for s in state.values()), "step not undone"

    trainer.callbacks.append(PoisonStep2())
    loader = torch.utils.data.DataLoader(_batches(), batch_size=None)
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="non-finite gradient at step 2"):
            trainer.fit(module, loader)
        # plain AdamW: raised in the bad step; fused: at the end-of-run read
        assert steps_seen[-1] == (4 if fused else 3)
        return
    trainer.fit(module, loader)
    assert module.nonfinite_steps == 1 and trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("fused", [False, True])
def test_too_many_nonfinite_steps_in_a_row_stop_the_run(fused: bool, tmp_path: Path) -> None:
    import lightning as L

    from eegfm.training.pretrain.module import MaskedPretrainModule

    torch.manual_seed(0)
    module = MaskedPretrainModule(warmup_steps=1, max_consecutive_nonfinite=2, fused_adamw=fused,
                                  nonfinite_check_every_n_steps=5)

    class PoisonFromStep1(L.Callback):
        def on_after_backward(self, trainer, pl_module) -> None:
            if trainer.fit_loop.epoch_loop.batch_idx >= 1:
                next(p for p in pl_module.parameters() if p.grad is not None).grad[0] = torch.inf

    trainer = _cpu_trainer(tmp_path, 6, callbacks=[PoisonFromStep1()])
    with pytest.raises(FloatingPointError, match=f"{4 if fused else 3} non-finite gradients in"):
        trainer.fit(module, torch.utils.data.DataLoader(_batches(6), batch_size=None))
    # plain AdamW: at the end of the 3rd bad step in a row; fused: at the read after step 5
    assert trainer.global_step == (5 if fused else 4)


@pytest.mark.parametrize("pretrainer", [None, {"bandpower_weight": 1.0,
                                                "connectivity_weight": 1.0}],
                         ids=["masked", "with_targets"])
def test_gpu_recipe_steps_never_read_device_values(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path,
                                                   pretrainer: dict | None) -> None:
    """Between metric flushes, a bf16 + fused AdamW step reads no tensor value on the host:
    on a GPU each read would stall the host until the step finished, so the next step's
    launches could not overlap it. Audited on the CPU by intercepting every Python-level read
    (item, bool, tolist, ...), data-dependent shape (nonzero, boolean indexing) and host-data
    tensor creation on a device; the masks' early exit, free on the CPU only, is turned off.
    With the neuro-statistics targets on, their computation and heads are audited too."""
    import traceback

    import lightning as L
    from torch.overrides import TorchFunctionMode

    from eegfm.models import masking
    from eegfm.training.pretrain.callbacks import StepMetricsLogger
    from eegfm.training.pretrain.module import MaskedPretrainModule

    monkeypatch.setattr(masking, "_READS_ARE_FREE", set())
    reads_value = {"item", "__bool__", "tolist", "__float__", "__int__", "__index__", "numpy",
                   "cpu", "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"}
    found: list[str] = []

    class ReadAudit(TorchFunctionMode):
        active = False

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            host_data = (name in ("tensor", "as_tensor") and "device" in kwargs
                         and not torch.is_tensor(args[0]))
            bool_index = name == "__getitem__" and any(
                torch.is_tensor(i) and i.dtype == torch.bool
                for i in (args[1] if isinstance(args[1], tuple) else (args[1],)))
            if self.active and (name in reads_value or host_data or bool_index):
                frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                          for f in traceback.extract_stack()[-6:-1]]
                found.append(f"{name} at {' <- '.join(reversed(frames))}")
            return func(*args, **kwargs)

    audit = ReadAudit()

    class AuditSteps(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            audit.active = trainer.global_step in (2, 3, 4)  # steps 3-5: no flush, no check

    torch.manual_seed(0)
    module = MaskedPretrainModule(warmup_steps=1, fused_adamw=True, pretrainer=pretrainer)
    trainer = _cpu_trainer(tmp_path, 6, precision="bf16-mixed", gradient_clip_val=1.0,
                           callbacks=[AuditSteps(), StepMetricsLogger(flush_every_n_steps=50)])
    with audit:
        trainer.fit(module, torch.utils.data.DataLoader(_batches(6), batch_size=None))
    assert trainer.global_step == 6
    assert not found, "host reads of device values:\n" + "\n".join(found)


def test_bf16_with_fused_adamw_clips_gradients(tmp_path: Path) -> None:
    """The GPU recipe (bf16-mixed, fused AdamW, clipping) runs: Lightning refuses to clip for a
    fused optimizer, so the module clips itself, to the norm it was given."""

    from eegfm.training.pretrain.module import MaskedPretrainModule

    clipped: list[tuple[float, float]] = []

    class Recording(MaskedPretrainModule):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                        gradient_clip_algorithm=None) -> None:
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            after = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            clipped.append((float(self.step_metrics["grad_norm"]), float(after)))

    torch.manual_seed(0)
    module = Recording(warmup_steps=1, fused_adamw=True)
    trainer = _cpu_trainer(tmp_path, 3, precision="bf16-mixed", gradient_clip_val=0.05)
    trainer.fit(module, torch.utils.data.DataLoader(_batches(), batch_size=None))
    assert trainer.global_step == 3
    assert module.optimizers().optimizer.defaults["fused"]
    assert len(clipped) == 3
    for before, after in clipped:
        assert before > 0.05
        assert after == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize("config", ["tiny", "base"])
def test_shipped_pretrain_configs_parse(config: str, tmp_path: Path) -> None:
    """Every key of the shipped configs is one the CLI knows (a typo fails here, not on a GPU)."""
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "eegfm", "pretrain", "--config",
         str(root / "configs" / "pretrain" / f"{config}.yaml"), "--data", str(tmp_path),
         "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    resolved = yaml.safe_load(result.stdout)
    shipped = yaml.safe_load((root / "configs" / "pretrain" / f"{config}.yaml").read_text())
    for section in ("trainer", "model", "data"):
        for key, value in shipped.get(section, {}).items():
            assert resolved[section][key] == value, f"{section}.{key}"


def test_sharded_strategies_clip_by_the_norm_over_all_shards(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under FSDP each rank holds part of the gradients: the logged and clipped norm is over
    all ranks' parts (Lightning refuses FSDP on the CPU, so the all-reduce is simulated)."""
    from lightning.pytorch.strategies import FSDPStrategy

    from eegfm.training.pretrain import module as pretrain_module
    from eegfm.training.pretrain.module import MaskedPretrainModule

    torch.manual_seed(0)
    module = MaskedPretrainModule()
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    full = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    other_rank = params[len(params) // 2:]
    other_sq = sum(float(p.grad.norm()) ** 2 for p in other_rank)
    for p in other_rank:  # this rank's shard: the first half
        p.grad = None
    monkeypatch.setattr(pretrain_module, "sum_over_ranks", lambda value: value + other_sq)
    module._trainer = SimpleNamespace(strategy=FSDPStrategy(), precision="bf16-mixed", world_size=1,
                                      global_step=0)
    optimizer = torch.optim.AdamW(params)
    module.on_before_optimizer_step(optimizer)
    assert float(module.step_metrics["grad_norm"]) == pytest.approx(float(full), rel=1e-5)

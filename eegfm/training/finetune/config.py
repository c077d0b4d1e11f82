"""The fine-tuning configuration: typed dataclasses that ``configs/finetune/*.yaml`` fill.

``load_finetune_config(path, **overrides)`` reads the YAML with ``yaml.safe_load`` and checks
every key and type against these classes (an unknown key or a wrong type is an error naming it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eegfm.config import ConfigError, from_mapping, read_yaml
from eegfm.data.tasks import TaskConfig
from eegfm.evaluation.alignment import ALIGNMENTS, Alignment
from eegfm.evaluation.classical import BANDS, C_GRID

ENCODER_MODELS = ("pretrained", "random_init")
CLASSICAL_MODELS = ("bandpower_lr", "tangent_lr")
NETWORK_MODELS = ("eegnet", "shallow", "conformer", "dbconformer")
MODELS = ENCODER_MODELS + CLASSICAL_MODELS + NETWORK_MODELS
# the deep Conformers cost minutes per fold on a CPU: asked for by name (see eegmat.yaml)
DEFAULT_MODELS = ("pretrained", "random_init", "bandpower_lr", "tangent_lr", "eegnet", "shallow")
HEAD_FREEZES = {"linear": True, "mlp": False, "shared_routed": True}  # default mode per head


ACCELERATORS = ("cpu", "cuda", "gpu", "mps", "auto")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--accelerator, --devices, --precision (finetune, predict, demo), with the meaning of
    `eegfm pretrain --trainer.accelerator/devices/precision`."""
    parser.add_argument("--accelerator", choices=ACCELERATORS,
                        help="where models run (default cpu; cuda or gpu for a GPU)")
    parser.add_argument("--devices", type=int, help="devices to use (one: folds run in turn)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="32-true (default), bf16-mixed or 16-mixed (autocast)")


@dataclass
class TrainConfig:
    """Optimisation and model selection, shared by every model of a run."""

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3  # head (and baselines unless baselines.lr is set)
    weight_decay: float = 0.01
    encoder_lr_scale: float = 0.1  # full fine-tuning: encoder lr = lr x this (top block)
    layer_decay: float | None = None  # e.g. 0.75: each block further down gets lr x decay
    warmup_epochs: float = 0.0  # linear warm-up, then cosine decay to 0 over `epochs`
    patience: int = 8  # epochs without improvement of `monitor` before stopping
    min_epochs: int = 1
    monitor: Literal["val_loss", "val_balanced_accuracy"] = "val_loss"
    balance: Literal["sampler", "none"] = "sampler"  # class-balanced sampling of training windows
    grad_clip: float | None = 1.0
    threads: int | None = None  # torch intra-op threads (None: leave torch's default)
    # where fits and predictions run (Lightning Fabric), with `eegfm pretrain`'s meanings
    accelerator: str = "cpu"  # cpu | cuda | gpu | mps | auto
    devices: int = 1  # one device: folds run one after the other
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("train.epochs, train.batch_size and train.patience must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"train.accelerator must be one of {ACCELERATORS}, "
                              f"got {self.accelerator!r}")
        if self.devices != 1:
            raise ConfigError(f"train.devices={self.devices}: fine-tuning and predict run on one "
                              "device (folds one after the other); start several runs to use "
                              "several devices")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {PRECISIONS}, "
                              f"got {self.precision!r}")


@dataclass
class BaselineConfig:
    """braindecode EEGNet / ShallowFBCSPNet trained from scratch on the same windows."""

    epochs: int | None = None  # None: train.epochs
    lr: float | None = None  # None: train.lr
    weight_decay: float = 0.0
    input_scale_uv: float = 50.0  # signal divided by this: O(1) inputs, amplitudes kept
    eegnet: dict[str, Any] = field(default_factory=dict)  # braindecode EEGNet keyword arguments
    shallow: dict[str, Any] = field(default_factory=dict)  # ShallowFBCSPNet keyword arguments
    conformer: dict[str, Any] = field(default_factory=dict)  # braindecode EEGConformer options
    dbconformer: dict[str, Any] = field(default_factory=dict)  # eegfm.models.DBConformer options


@dataclass
class ClassicalConfig:
    """Band power + LR and tangent space + LR (eegfm.evaluation.classical)."""

    bands: dict[str, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in BANDS.items()})  # name: [low, high) Hz
    c_grid: list[float] = field(default_factory=lambda: list(C_GRID))  # LR C, chosen on val

    def __post_init__(self) -> None:
        for name, edges in self.bands.items():
            if len(edges) != 2 or not 0 <= edges[0] < edges[1]:
                raise ConfigError(f"classical.bands.{name}: expected [low, high) Hz with "
                                  f"0 <= low < high, got {edges}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ConfigError(f"classical.c_grid must hold positive values, got {self.c_grid}")


@dataclass
class SubjectSplit:
    """``protocol: split``: explicit train / validation / test subjects (a published split)."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.train, self.val, self.test = ([str(s) for s in part]
                                           for part in (self.train, self.val, self.test))
        for name in ("train", "val", "test"):
            part = getattr(self, name)
            twice = sorted({s for s in part if part.count(s) > 1})
            if twice:
                raise ConfigError(f"split.{name} lists subject(s) {twice} more than once")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                raise ConfigError(f"split: subject(s) {both} are in both split.{a} and "
                                  f"split.{b}")
        if not self.train or not self.test:
            raise ConfigError("split.train and split.test must each name at least one subject")


@dataclass
class FinetuneConfig:
    """One fine-tuning run: task, data, models, head, protocol, training, output."""

    task: TaskConfig | None = None  # required, except for moabb: data (MOABB's events)
    data: str | list[str] | None = None  # shard dir(s) or moabb:NAME[:subjects]
    prep_config: str | None = None  # prep YAML for moabb: data (None: the defaults)
    prep: dict[str, Any] = field(default_factory=dict)  # prep overrides (e.g. moabb_options)
    cache_dir: str | None = None  # where moabb: data is converted (None: ~/.cache/eegfm/moabb)
    checkpoint: str | None = None  # pretrained encoder (eegfm.checkpoint); None: no 'pretrained'
    encoder: str = "eegfm_tiny"  # architecture of random_init when no checkpoint is given
    encoder_options: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    head: Literal["linear", "mlp", "shared_routed"] = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)  # create_head keyword options
    spiking: Literal["none", "lif", "int"] = "none"
    freeze: bool | None = None  # None: the head's default (linear, shared_routed: frozen)
    augment: dict[str, Any] = field(default_factory=dict)  # make_view_augmenter options
    protocol: Literal["loso", "kfold", "within", "split"] = "loso"
    split: SubjectSplit | None = None  # protocol split: the subject lists
    n_folds: int = 5
    n_val_subjects: int | float = 0.2
    n_val_groups: int | float = 0.2
    n_blocks: int = 5  # within: time blocks per recording
    max_folds: int | None = None  # run only the first folds (quick checks; stated in the report)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    # subject alignment, each entry one run of every model: none, euclidean (EA of windows for
    # networks and encoders, covariance re-centring for tangent space, per-subject
    # standardisation of band powers); see eegfm.evaluation.alignment
    align: list[Alignment] = field(default_factory=lambda: ["none", "euclidean"])
    n_bootstrap: int = 10_000  # resamples of the paired bootstrap CIs
    resume: bool = True  # reuse models finished by an earlier run of the same config in `out`
    out: str = "runs/finetune"
    save_model: bool = True  # refit encoder models on all subjects, save model_<name>/
    tensorboard: bool = False  # also write TensorBoard event files next to the CSV logs
    token_cache_mb: float = 2048.0  # frozen encoder: cache tokens when they fit in this
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models: unknown {unknown}; choose from {list(MODELS)}")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models lists a model twice: {self.models}")
        if not self.align or len(set(self.align)) != len(self.align):
            raise ConfigError(f"align must list each of {list(ALIGNMENTS)} at most once, "
                              f"got {self.align}")
        if (self.protocol == "split") != (self.split is not None):
            raise ConfigError("protocol split needs the split section (train/val/test subjects)"
                              if self.split is None else
                              f"a split section is given but protocol is {self.protocol!r}; "
                              "use protocol: split")
        if self.max_folds is not None and self.max_folds < 1:
            raise ConfigError(f"max_folds must be at least 1 (or null for every fold), got "
                              f"{self.max_folds}")
        if self.n_bootstrap < 100:
            raise ConfigError(f"n_bootstrap must be at least 100, got {self.n_bootstrap}")

    @property
    def frozen(self) -> bool:
        """Whether the encoder is frozen (explicit ``freeze`` or the head's default)."""
        return HEAD_FREEZES[self.head] if self.freeze is None else self.freeze


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """Read a fine-tuning YAML (None: defaults) and apply ``overrides`` (dotted keys allowed).

    ``overrides`` with value None are ignored, so CLI options left unset keep the file's value.
    """
    values: dict[str, Any] = read_yaml(path) if path is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = value
    return from_mapping(FinetuneConfig, values, "config" if path is None else str(path))

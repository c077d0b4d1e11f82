"""The fine-tuning configuration: typed dataclasses that ``configs/finetune/*.yaml`` fill.

They are the schema of ``eegfm finetune``'s options (``--train.patience 3``; see eegfm.config)
and of :func:`load_finetune_config` (a YAML plus dotted overrides): an unknown key or a wrong
type is an error naming it. A field's docstring is its ``--help`` text.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eegfm.config import ConfigError, Options, load_config
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

# where models run (Lightning Fabric), with the meanings of `eegfm pretrain --trainer.*`
Accelerator = Literal["cpu", "cuda", "gpu", "mps", "auto"]
Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
ACCELERATORS: tuple[str, ...] = typing.get_args(Accelerator)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)


def check_devices(accelerator: str, devices: int, precision: str, where: str = "") -> None:
    """Refuse device settings fine-tuning and predict cannot use (``where`` prefixes keys)."""
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"{where}accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if devices != 1:
        raise ConfigError(f"{where}devices={devices}: fine-tuning and predict run on one device "
                          "(folds one after the other); start several runs to use several "
                          "devices")
    if precision not in PRECISIONS:
        raise ConfigError(f"{where}precision must be one of {PRECISIONS}, got {precision!r}")


@dataclass
class TrainConfig:
    """Optimisation and model selection, shared by every model of a run."""

    epochs: int = 30
    """Training epochs (at most: early stopping may end sooner)."""
    batch_size: int = 64
    """Training windows per batch."""
    eval_batch_size: int = 256
    """Windows per batch when validating and predicting."""
    lr: float = 1e-3
    """Learning rate of the head (and of the baselines unless baselines.lr is set)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    encoder_lr_scale: float = 0.1
    """Full fine-tuning: encoder learning rate = lr x this (top block)."""
    layer_decay: float | None = None
    """E.g. 0.75: each encoder block further down gets its learning rate x decay."""
    warmup_epochs: float = 0.0
    """Linear warm-up, then cosine decay to 0 over `epochs`."""
    patience: int = 8
    """Epochs without improvement of `monitor` before stopping."""
    min_epochs: int = 1
    """Epochs trained before early stopping may stop."""
    monitor: Literal["val_loss", "val_balanced_accuracy"] = "val_loss"
    """Validation metric of early stopping and model selection."""
    balance: Literal["sampler", "none"] = "sampler"
    """Class-balanced sampling of training windows (sampler) or none."""
    grad_clip: float | None = 1.0
    """Gradient norm clipping (None: no clipping)."""
    threads: int | None = None
    """Torch intra-op threads (None: leave torch's default)."""
    accelerator: Accelerator = "cpu"
    """Where fits and predictions run (Lightning Fabric): cpu, or cuda / gpu for a GPU."""
    devices: int = 1
    """Devices to use; one: folds run one after the other."""
    precision: Precision = "32-true"
    """32-true, or bf16-mixed / 16-mixed (autocast)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("train.epochs, train.batch_size and train.patience must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        check_devices(self.accelerator, self.devices, self.precision, "train.")


@dataclass
class BaselineConfig:
    """braindecode EEGNet / ShallowFBCSPNet trained from scratch on the same windows."""

    epochs: int | None = None
    """Training epochs of the networks (None: train.epochs)."""
    lr: float | None = None
    """Learning rate of the networks (None: train.lr)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the networks."""
    input_scale_uv: float = 50.0
    """The signal is divided by this: O(1) inputs, amplitudes kept."""
    eegnet: Options = field(default_factory=dict)
    """braindecode EEGNet keyword arguments."""
    shallow: Options = field(default_factory=dict)
    """braindecode ShallowFBCSPNet keyword arguments."""
    conformer: Options = field(default_factory=dict)
    """braindecode EEGConformer keyword arguments."""
    dbconformer: Options = field(default_factory=dict)
    """eegfm.models.DBConformer keyword arguments."""


@dataclass
class ClassicalConfig:
    """Band power + LR and tangent space + LR (eegfm.evaluation.classical)."""

    bands: dict[str, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in BANDS.items()})
    """Band power features, name: [low, high) Hz."""
    c_grid: list[float] = field(default_factory=lambda: list(C_GRID))
    """Logistic regression C values, the best chosen on the validation subjects."""

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
    """Training subjects; ids are text: '["01","02"]' (YAML reads a bare 01 as the number 1)."""
    val: list[str] = field(default_factory=list)
    """Validation subjects (model selection, early stopping)."""
    test: list[str] = field(default_factory=list)
    """Test subjects."""

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

    task: TaskConfig | None = None
    """How windows get their labels; required, except for moabb: data (MOABB's events)."""
    data: str | list[str] | None = None
    """Shard directory, a list of them ('[a,b]'), or moabb:NAME[:subjects]."""
    prep_config: str | None = None
    """Prep YAML for moabb: data (None: the defaults)."""
    prep: Options = field(default_factory=dict)
    """Prep overrides for moabb: data (e.g. moabb_options)."""
    cache_dir: str | None = None
    """Where moabb: data is converted (None: ~/.cache/eegfm/moabb)."""
    checkpoint: str | None = None
    """Pretrained encoder (model folder or checkpoint); None: only random_init and baselines."""
    encoder: str = "eegfm_tiny"
    """Architecture of random_init when no checkpoint is given."""
    encoder_options: Options = field(default_factory=dict)
    """create_model overrides of the encoder."""
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    """Models to run, e.g. '[pretrained,tangent_lr]': pretrained, random_init, bandpower_lr,
    tangent_lr, eegnet, shallow, conformer, dbconformer."""
    head: Literal["linear", "mlp", "shared_routed"] = "linear"
    """Classification head on the encoder."""
    head_options: Options = field(default_factory=dict)
    """create_head keyword options, e.g. --head_options.branch shared."""
    spiking: Literal["none", "lif", "int"] = "none"
    """Spiking variant of the head."""
    freeze: bool | None = None
    """Freeze the encoder; null: the head's default (linear, shared_routed frozen; mlp not)."""
    probe: Literal["gradient", "logistic"] = "gradient"
    """A non-spiking linear head is trained by the loop (gradient, train.*) or solved as a
    logistic regression on the standardised features, C picked on the validation subjects
    (logistic, classical.c_grid): the whole model when frozen, the start of full fine-tuning
    (LP-FT) with freeze false. Other heads always train by the loop."""
    augment: Options = field(default_factory=dict)
    """make_view_augmenter options (training-time augmentation)."""
    refit: bool = False
    """Models trained by the loop (encoders, networks): once a fold has selected its epoch on
    the validation subjects, train again on training + validation subjects for that many epochs
    (a solved probe refit on both with its chosen C), as the classical baselines are refit; the
    refit model is the one tested. A second, shorter fit per fold."""
    wise: float | None = None
    """WiSE-FT for LP-FT (probe logistic, freeze false): the tested model's weights are
    (1 - wise) x its start (the encoder as loaded, the solved probe) + wise x the fine-tuned
    ones, per fold and in the saved model; null: the fine-tuned weights alone."""
    augment_windows: bool = False
    """Full fine-tuning (freeze false): augment every training window with the augment:
    transforms; heads with a pair view always augment both views."""
    protocol: Literal["loso", "kfold", "within", "split"] = "loso"
    """Cross-subject protocol; split: the subject lists of the split section."""
    split: SubjectSplit | None = None
    """protocol split: the train / val / test subject lists."""
    n_folds: int = 5
    """Folds of the kfold protocol."""
    n_val_subjects: int | float = 0.2
    """Validation subjects drawn from each fold's training subjects (a count or a fraction)."""
    n_val_groups: int | float = 0.2
    """within: validation time blocks (a count or a fraction)."""
    n_blocks: int = 5
    """within: time blocks per recording."""
    max_folds: int | None = None
    """Run only the first folds (quick checks; stated in the report)."""
    seed: int = 0
    """Seed of the splits and of every model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    align: list[Alignment] = field(default_factory=lambda: ["none", "euclidean"])
    """Subject alignments, each a run of every model: none, euclidean (EA of windows for
    networks and encoders, covariance re-centring for tangent space, per-subject
    standardisation of band powers); see eegfm.evaluation.alignment."""
    n_bootstrap: int = 10_000
    """Resamples of the paired bootstrap confidence intervals."""
    resume: bool = True
    """Reuse the models an earlier run of the same config finished in `out` (kept in
    OUT/partial/); false: run every model again."""
    out: str = "runs/finetune"
    """Output directory of the report."""
    save_model: bool = True
    """Refit the encoder models on all subjects and save model_<name>/ (false: skip it)."""
    tensorboard: bool = False
    """Also write TensorBoard event files next to the CSV logs."""
    token_cache_mb: float = 2048.0
    """Frozen encoder: cache its tokens when they fit in this many MB."""
    progress: bool = True
    """Show progress bars."""

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
        if self.wise is not None and not (self.solves_head and not self.frozen
                                          and 0.0 <= self.wise <= 1.0):
            raise ConfigError(f"wise={self.wise}: WiSE-FT averages LP-FT's start and end, so it "
                              "needs head linear, probe logistic, freeze false and 0 <= wise "
                              "<= 1")
        if self.augment_windows and self.frozen:
            raise ConfigError("augment_windows needs full fine-tuning (freeze false): a frozen "
                              "encoder's tokens are computed once, unaugmented")

    @property
    def solves_head(self) -> bool:
        """Whether the head is first solved as a logistic regression (``probe: logistic`` on a
        non-spiking linear head)."""
        return self.probe == "logistic" and self.head == "linear" and self.spiking == "none"

    @property
    def solved_probe(self) -> bool:
        """Whether the solved head is the whole fit (frozen encoder: nothing left to train)."""
        return self.solves_head and self.frozen

    @property
    def frozen(self) -> bool:
        """Whether the encoder is frozen (explicit ``freeze`` or the head's default)."""
        return HEAD_FREEZES[self.head] if self.freeze is None else self.freeze


def load_finetune_config(path: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """Read a fine-tuning YAML (None: defaults) and apply ``overrides`` (dotted keys allowed).

    ``overrides`` with value None are ignored, so options left unset keep the file's value.
    """
    return load_config(FinetuneConfig, path, **overrides)

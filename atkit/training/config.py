"""Run configuration: a dataclass loadable from YAML, validated before any work starts."""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..core.utils import ConfigError, check_choice, check_field_types, load_yaml_mapping, unknown_name_error


@dataclass
class EvalConfig:
    """Evaluation during and after training.

    Each epoch: clean and PGD-``pgd_steps`` accuracy on ``n_test`` class-stratified test images (or the
    held-out validation split when ``RunConfig.val_size > 0``). ``select_by`` picks the "best"
    checkpoint (PGD-20 for RPAT, PGD-10 for DUCAT/RAAT: docs/methods.md, common protocol). At the end,
    ``final_attacks`` are run on ``final_n_test`` test images for the best and the final model.
    ``sanity``: beside a robust final evaluation, run the gradient-masking checks of
    :mod:`atkit.evaluation.sanity` on the first ``sanity_n_test`` of those images (a stratified prefix) (results in ``eval.json``).
    """

    every: int = 1
    n_test: int = 1000
    pgd_steps: int = 20
    select_by: str = "pgd"
    final_attacks: list[str] = field(default_factory=lambda: ["clean", "pgd20", "cw"])
    final_n_test: Optional[int] = None
    batch_size: int = 500
    # Evaluation numbers are reported in exact fp32 (TF32 off); "tf32"/"bf16"/"auto" trade exactness for speed
    # (atkit.core.fast.evaluation_parity decides per model whether they still give the fp32 result).
    precision: str = "fp32"
    sanity: bool = True
    sanity_n_test: int = 500


LAST_BATCH_CHOICES = ("auto", "keep", "drop")


def drop_last_batch(rows: int, batch_size: int, last_batch: str = "auto") -> bool:
    """Whether an epoch of ``rows`` images in batches of ``batch_size`` drops its last partial batch
    under the ``last_batch`` policy of :class:`RunConfig`. The only batch (``rows < batch_size``) is never
    dropped: an epoch without a step would leave the model untrained."""
    check_choice("last_batch", last_batch, LAST_BATCH_CHOICES)
    tail = rows % batch_size
    if tail == 0 or last_batch == "keep" or rows < batch_size:  # never drop the only batch: an epoch needs a step
        return False
    return last_batch == "drop" or tail < batch_size / 4


def _refuse_unknown_keys(label: str, values: dict[str, Any], cls: type) -> None:
    """A key that is not a field of the dataclass ``cls`` is refused by name, with the closest field."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise unknown_name_error(label, key, names)


@dataclass
class RunConfig:
    """Everything that defines a training run (paper defaults: docs/methods.md, common protocol).

    ``init_checkpoint`` starts from the weights of an existing checkpoint (e.g. DUCAT fine-tuning of
    a robust model, DUCAT, Algorithm 1): an atkit checkpoint, or someone else's state dict of the run's ``model``
    (RobustBench key names and normalization buffers accepted, :mod:`atkit.models.external`), and ``start_epoch``
    makes the run begin at that epoch of its schedule, so epoch windows (DUCAT's ``t``) and the learning rate line
    up with the paper.

    ``epochs``, ``lr`` and ``batch_size`` default to the schedule's values (e.g. ``fait100`` trains
    with batch 512 and lr 0.4) and otherwise to 110 / 0.1 / 128. ``batch_size`` is the total batch;
    under ``torchrun`` each of the W processes trains on ``batch_size // W`` (:mod:`atkit.training.distributed`).

    ``precision`` (``"auto"``, ``"fp32"``, ``"tf32"``, ``"bf16"``), ``channels_last`` (``true``/``false``/``"auto"``)
    and ``compile`` (``false``, ``true`` or a ``torch.compile`` backend name) select the fast training
    path of :mod:`atkit.core.fast`; ``precision: fp32`` with ``channels_last: false`` is the exact fp32 path.

    ``last_batch`` is what happens to an epoch's last, partial batch: ``"keep"`` (the reference code's
    DataLoader default), ``"drop"``, or ``"auto"`` (default): dropped only when it holds fewer than a
    quarter of a batch. A handful of images then never gets a full-lr step of its own with BatchNorm
    statistics of a handful of samples, which on the synthetic data (8 of 5,000 images at batch 128)
    was enough to throw standard training back to a loss of 2-5 at the start of every epoch; the
    standard datasets at their standard batch sizes keep every image (CIFAR-10 at 128: 80 left, at
    512: 336; SVHN at 128: 41; Tiny-ImageNet at 128: 32), as the papers' code does.

    ``cutmix`` (``{prob, alpha}``, null: off) and ``label_smoothing`` change the targets of methods that take
    probability targets (:mod:`atkit.training.augment`); ``accumulate_steps`` splits each batch into that many micro-batches
    whose gradients one optimiser step averages (:mod:`atkit.training.accumulate`).
    """

    method: str = "pgd_at"
    method_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = "synthetic"
    data: dict[str, Any] = field(default_factory=dict)
    val_size: int = 0
    model: str = "resnet18"
    model_params: dict[str, Any] = field(default_factory=dict)
    threat: dict[str, Any] = field(default_factory=dict)
    schedule: str = "pang110"
    schedule_params: dict[str, Any] = field(default_factory=dict)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    ema_decay: Optional[float] = None
    augment: bool = True
    last_batch: str = "auto"
    seed: int = 0
    device: str = "auto"
    # Fast path (atkit/core/fast.py): "auto" = bf16 autocast + channels_last on CUDA, exact fp32 on the CPU.
    precision: str = "auto"
    channels_last: Any = "auto"
    compile: Any = False
    # CPU threads of torch: "auto" (never more than the free cores) or a count; ATKIT_THREADS / --threads win
    # (atkit.core.threads). It does not change what a run computes, so runs are reused across it.
    threads: Any = "auto"
    name: Optional[str] = None
    out_dir: str = "outputs/runs"
    max_steps_per_epoch: Optional[int] = None
    track_train_clean: bool = True
    init_checkpoint: Optional[str] = None
    start_epoch: int = 0
    # Extra views of metrics.csv: {tensorboard: true} also writes TensorBoard scalars (atkit.training.tensorboard_log).
    logging: dict[str, Any] = field(default_factory=dict)
    # Target-changing options (atkit.training.augment): CutMix {prob, alpha} or null, label smoothing; gradient accumulation
    # over accumulate_steps micro-batches per optimiser step (atkit.training.accumulate).
    cutmix: Optional[dict[str, Any]] = None
    label_smoothing: float = 0.0
    accumulate_steps: int = 1
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a mapping of keys to values, got {type(d).__name__}")
        d = dict(d)
        _refuse_unknown_keys("config key", d, cls)
        eval_d = d.pop("eval", None) or {}
        for key in ("out_dir", "init_checkpoint"):  # a pathlib.Path is as good as its string
            if isinstance(d.get(key), os.PathLike):
                d[key] = os.fspath(d[key])
        # Every value against its declared type first: a wrong type must never reach the code that uses it.
        check_field_types(cls, d)
        if isinstance(eval_d, EvalConfig):
            eval_cfg = eval_d
        else:
            if not isinstance(eval_d, dict):
                raise ConfigError(f"config key 'eval' must be a mapping, got {eval_d!r}")
            eval_d = dict(eval_d)
            _refuse_unknown_keys("eval config key", eval_d, EvalConfig)
            if isinstance(eval_d.get("final_attacks"), str):  # "clean" or "clean,pgd20": one name or a comma list
                from ..evaluation import split_attack_list  # why: evaluation pulls scipy; loaded on validation

                eval_d["final_attacks"] = split_attack_list(eval_d["final_attacks"])
            check_field_types(EvalConfig, eval_d, "eval.")
            eval_cfg = EvalConfig(**eval_d)
        cfg = cls(**d, eval=eval_cfg)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------------------------------
    def resolved_schedule(self):
        from ..core.schedules import get_schedule

        sched = get_schedule(self.schedule, **self.schedule_params)
        return sched.scaled_to(self.resolved_epochs())

    def resolved_epochs(self) -> int:
        from ..core.schedules import get_schedule

        if self.epochs is not None:
            return self.epochs
        sched = get_schedule(self.schedule, **self.schedule_params)
        return sched.epochs if sched.name != "constant" else 110

    def resolved_lr(self) -> float:
        from ..core.schedules import get_schedule

        if self.lr is not None:
            return self.lr
        return get_schedule(self.schedule, **self.schedule_params).lr or 0.1

    def resolved_batch_size(self) -> int:
        from ..core.schedules import get_schedule

        if self.batch_size is not None:
            return self.batch_size
        return get_schedule(self.schedule, **self.schedule_params).batch_size or 128

    def threat_model(self):
        from ..methods import ThreatModel

        return ThreatModel.from_dict(self.threat)

    def build_method(self):
        from ..methods import get_method

        return get_method(self.method, self.threat_model(), **self.method_params)

    def validate(self) -> None:
        """Check every name and number that can be checked without loading data or models."""
        from ..data import DATASETS, check_dataset_options
        from ..models import MODELS

        check_field_types(RunConfig, {f.name: getattr(self, f.name) for f in dataclasses.fields(RunConfig)})
        check_field_types(EvalConfig, dataclasses.asdict(self.eval), "eval.")
        if self.name is not None and (not self.name.strip() or self.name in (".", "..")
                                      or any(sep in self.name for sep in ("/", "\\", os.sep))):
            raise ConfigError(f"name={self.name!r} must be a plain folder name (no '/', '\\', '.' or '..'): the "
                              f"run folder is created inside out_dir={self.out_dir!r}")
        if self.dataset not in DATASETS:
            raise unknown_name_error("dataset", self.dataset, DATASETS)
        check_dataset_options(self.dataset, self.data)
        if self.model not in MODELS:
            raise unknown_name_error("model", self.model, MODELS)
        self.resolved_schedule()
        method = self.build_method()
        for key in ("epochs", "batch_size", "max_steps_per_epoch"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{key}={value!r} must be a positive integer")
        for key in ("lr", "momentum", "weight_decay"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ConfigError(f"{key}={value!r} must be a non-negative number")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay!r} must be in [0, 1) (0.999 in the papers), or null")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed={self.seed!r} must be an integer")
        if self.init_checkpoint is not None and not Path(self.init_checkpoint).is_file():
            raise ConfigError(f"init_checkpoint {self.init_checkpoint!r} does not exist (give an atkit checkpoint, "
                              "e.g. outputs/runs/<run>/checkpoints/best.pt, or someone else's state dict of the "
                              "run's model)")
        if not isinstance(self.start_epoch, int) or self.start_epoch < 0:
            raise ConfigError(f"start_epoch={self.start_epoch!r} must be a non-negative integer")
        if self.val_size < 0:
            raise ConfigError(f"val_size={self.val_size!r} must be >= 0")
        from ..core.fast import PRECISIONS, check_compile, resolve_channels_last
        from ..core.threads import parse_threads
        from ..evaluation import EVAL_PRECISIONS, parse_attack  # why: evaluation pulls scipy; loaded on validation

        check_choice("precision", self.precision, PRECISIONS)
        parse_threads(self.threads, "threads")
        check_choice("last_batch", self.last_batch, LAST_BATCH_CHOICES)
        resolve_channels_last(self.channels_last, "cpu")
        check_compile(self.compile)
        check_choice("eval.precision", self.eval.precision, EVAL_PRECISIONS)
        from .tensorboard_log import check_logging_options

        check_logging_options(self.logging)
        from .augment import check_training_options

        check_training_options(self, method)
        ev = self.eval
        if ev.select_by not in ("pgd", "clean"):
            raise unknown_name_error("eval.select_by", ev.select_by, ["pgd", "clean"])
        if not isinstance(ev.sanity, bool):
            raise ConfigError(f"eval.sanity={ev.sanity!r} must be true or false")
        for key in ("every", "n_test", "batch_size", "sanity_n_test"):
            if not isinstance(getattr(ev, key), int) or getattr(ev, key) < 1:
                raise ConfigError(f"eval.{key}={getattr(ev, key)!r} must be a positive integer")
        if not isinstance(ev.pgd_steps, int) or ev.pgd_steps < 0:
            raise ConfigError(f"eval.pgd_steps={ev.pgd_steps!r} must be a non-negative integer")
        for name in ev.final_attacks:
            parse_attack(name)  # the grammar atkit.evaluation reads them with: the same names, the same error

        self._warn_suspicious()

    def _warn_suspicious(self) -> None:
        """Values that are legal but almost always a mistake: say so (a warning, the run goes on)."""
        if self.resolved_lr() == 0:
            warnings.warn("lr=0: the weights never change, the run only measures its initial model", UserWarning,
                          stacklevel=3)
        threat = self.threat_model()
        if threat.steps > 1 and threat.step_size > threat.eps:
            warnings.warn(f"threat.step_size={threat.step_size:.4g} is larger than threat.eps={threat.eps:.4g} with "
                          f"{threat.steps} steps: every step after the first is clipped back to the eps-ball "
                          "(the papers use step_size = eps/4)", UserWarning, stacklevel=3)

    def default_name(self) -> str:
        return f"{self.method}-{self.dataset}-{self.model}-s{self.seed}"


def load_config_dict(source: str | Path) -> dict[str, Any]:
    """The mapping of a YAML run-config file (before validation), e.g. to apply ``--set`` overrides to it."""
    return load_yaml_mapping(source, "config file")


def load_config(source: str | Path | dict[str, Any] | RunConfig, **overrides: Any) -> RunConfig:
    """A :class:`RunConfig` from a YAML path, a dict or a config, with keyword overrides applied."""
    if isinstance(source, RunConfig):
        d = source.to_dict()
    elif isinstance(source, dict):
        d = dict(source)
    else:
        d = load_config_dict(source)
    d.update(overrides)
    return RunConfig.from_dict(d)

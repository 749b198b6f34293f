"""What a motivation experiment is: its parameters, its plan, its measurement, its claims and its figures.

An experiment is one file in :mod:`atkit.experiments` holding one :class:`Experiment` subclass, registered by
name with :func:`register_experiment`, as a training method is one file of :mod:`atkit.methods`:

* ``Params``: a dataclass deriving from :class:`TrainingParams` (the training settings every experiment shares),
  its fields' metadata (help, ranges, choices) checked before any work and shown in ``python -m atkit
  experiments``; the notebook's parameters cell names the same fields (a test keeps them equal);
* :meth:`Experiment.plan`: which models to train or reuse (label -> :class:`atkit.training.config.RunConfig`);
* :meth:`Experiment.measure`: what it measures on those models, returned as a JSON-ready *record* (per-image
  correctness under ``record["per_image"]``, other per-image data in its own files);
* :meth:`Experiment.judge`: the paper's claims on a record, one :mod:`atkit.experiments.claims` function each,
  from the record alone, so that the committed files of a run are judged by exactly the code that judged the
  run (``results/cifar10-cpu/build.py`` calls it; there is no second assembly);
* :meth:`Experiment.tables` and :meth:`Experiment.figures`: what the notebook shows and the files it writes.

:mod:`atkit.experiments.runtime` runs the parts in order (train or reuse, measure, judge, write, show).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import torch
import torch.nn as nn

from ..core.params import build_params, describe_params
from ..core.registry import Registry
from ..core.utils import ConfigError
from ..training.config import RunConfig

#: name -> :class:`Experiment` subclass, filled by :func:`register_experiment`.
EXPERIMENTS: Registry = Registry("experiment")


@dataclass
class TrainingParams:
    """The training settings every experiment shares (its models' runs), and where its files go."""

    dataset: str = field(default="synthetic", metadata={
        "help": "dataset of every run (synthetic, cifar10, cifar100, svhn, tiny-imagenet, folder)"})
    data: dict = field(default_factory=lambda: {"n_train": 5000, "n_test": 1000}, metadata={
        "help": "options of the dataset, e.g. {root: data/cifar10-jpeg}"})
    model: str = field(default="small_cnn", metadata={"help": "architecture of every run (atkit.models)"})
    epochs: int = field(default=10, metadata={"help": "epochs of every run", "range": (1, None)})
    schedule: str = field(default="pang110", metadata={"help": "learning-rate schedule (its shape, scaled to epochs)"})
    batch_size: int = field(default=128, metadata={"help": "training batch size", "range": (1, None)})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate", "range": (0.0, None)})
    eps: float = field(default=8 / 255, metadata={"help": "L-inf budget of training and evaluation attacks",
                                                  "range": (0.0, 1.0)})
    step_size: float = field(default=2 / 255, metadata={"help": "PGD step size", "range": (0.0, 1.0)})
    train_steps: int = field(default=10, metadata={"help": "PGD steps of the training attack", "range": (1, None)})
    max_steps_per_epoch: Optional[int] = field(default=None, metadata={
        "help": "cap on optimiser steps per epoch (None: the whole training set)", "range": (1, None)})
    seed: int = field(default=0, metadata={"help": "seed of every run and of every measurement"})
    n_eval: int = field(default=1000, metadata={"help": "class-stratified test images measured", "range": (1, None)})
    eval_batch_size: int = field(default=500, metadata={"help": "batch size of the measurements", "range": (1, None)})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    runs_dir: str = field(default="outputs/runs", metadata={
        "help": "where the runs are trained, or reused when an identical finished one is there"})
    reuse_runs: bool = field(default=True, metadata={"help": "reuse identical finished runs, resume interrupted ones"})
    out_dir: Optional[str] = field(default=None, metadata={
        "help": "where the experiment's files go (None: outputs/<experiment>; relative: under the project)"})
    progress: bool = field(default=True, metadata={"help": "progress lines while training and measuring"})


@dataclass
class Context:
    """What :meth:`Experiment.measure` works with: the parameters, the device, the trained
    models and their run folders, the dataset and the evaluation images (``x`` floats in [0, 1], ``y``), the
    output folder (for files an experiment writes itself) and a ``log`` for progress lines."""

    params: Any
    device: torch.device
    out: Path
    models: dict[str, nn.Module] = field(default_factory=dict)
    run_dirs: dict[str, str] = field(default_factory=dict)
    dataset: Any = None
    x: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    indices: Optional[torch.Tensor] = None

    def log(self, line: str) -> None:
        if self.params.progress:
            print(line, flush=True)

    def history(self, label: str) -> list[dict[str, Any]]:
        """The per-epoch records of run ``label`` (its metrics.json)."""
        return list(json.loads((Path(self.run_dirs[label]) / "metrics.json").read_text())["history"])


class Experiment:
    """Base class of a motivation experiment (the module docstring). Subclasses set ``name``, ``source`` (the
    paper's figure or table, e.g. "RPAT, Fig. 2"), ``Params`` and implement :meth:`plan`, :meth:`measure` and
    :meth:`judge`; :meth:`tables`, :meth:`figures`, :meth:`validate` and :meth:`load_record` are optional."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    Params: ClassVar[type] = TrainingParams
    #: Files every run writes into its folder besides metrics.json and eval_images.json (the contract test checks).
    outputs: ClassVar[tuple[str, ...]] = ()

    def rerun_hint(self, record: Optional[Mapping[str, Any]] = None) -> str:
        """What to run again for per-image data an older run did not save (claims then say "not judged"):
        ``record["_rerun"]`` when the caller named a command, else the experiment with the same parameters."""
        if record is not None and record.get("_rerun"):
            return str(record["_rerun"])
        return f"this experiment again, e.g. python -m atkit notebook {self.name} with the same parameters"

    def params(self, values: Mapping[str, Any]) -> Any:
        """The experiment's parameters from a mapping: unknown names, wrong types and values out of range are one
        line each, before any work; then :meth:`validate`."""
        p = build_params(self.Params, dict(values), self.name, "experiment")
        if p.out_dir is None:
            p.out_dir = f"outputs/{self.name}"
        self.validate(p)
        return p

    def validate(self, p: Any) -> None:
        """Checks across fields (e.g. at least two methods); raise :class:`atkit.core.utils.ConfigError`."""

    def run_config(self, p: Any, method: str, method_params: Optional[Mapping[str, Any]] = None, *,
                   device: str, eval_pgd_steps: int = 10, **changes: Any) -> RunConfig:
        """A run of ``method`` with the shared training settings. The per-epoch check is monitoring only (the
        experiment scores the final models itself): 200 images, PGD-``min(eval_pgd_steps, 10)``, clean final
        evaluation; it does not change what the run computes, so runs are reused across experiments."""
        d = dict(method=method, method_params=dict(method_params or {}), dataset=p.dataset, data=dict(p.data),
                 model=p.model, threat={"norm": "linf", "eps": p.eps, "step_size": p.step_size,
                                        "steps": p.train_steps},
                 schedule=p.schedule, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed, device=device,
                 out_dir=p.runs_dir, max_steps_per_epoch=p.max_steps_per_epoch,
                 eval={"n_test": min(p.n_eval, 200), "pgd_steps": min(eval_pgd_steps, 10), "final_attacks": ["clean"]})
        d.update(changes)
        return RunConfig.from_dict(d)

    # -- the parts ---------------------------------------------------------------------------------------------
    def plan(self, p: Any, device: str) -> dict[str, RunConfig]:
        """label -> the run that trains (or reuses) that model."""
        raise NotImplementedError

    def measure(self, ctx: "Context") -> dict[str, Any]:
        """The record: what was measured, JSON-ready (written into metrics.json); per-image flags under
        ``"per_image"`` (``{name: {metric: [bool, ...]}}``, written to per_image_correct.json); keys starting with
        ``_`` hold other per-image data, kept out of metrics.json (the experiment's tables write them, and its
        :meth:`load_record` reads them back)."""
        raise NotImplementedError

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        """The paper's claims on ``record`` (:class:`atkit.experiments.claims.ClaimCheck` each)."""
        raise NotImplementedError

    def annotate(self, record: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        """Put verdicts beside the numbers they judge in ``record`` (the tables the notebook shows), in place."""

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        """file stem -> pandas DataFrame, written as ``<stem>.csv`` and shown by the notebook."""
        return {}

    def figures(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        """file stem -> matplotlib Figure, written as ``<stem>.png`` and shown by the notebook."""
        return {}

    def load_record(self, folder: Path) -> dict[str, Any]:
        """A written run's record, to judge it again: metrics.json with per_image_correct.json under
        ``"per_image"`` (as lists of bools). Experiments with more per-image files read them too."""
        record = json.loads((Path(folder) / "metrics.json").read_text())
        flags = Path(folder) / "per_image_correct.json"
        record["per_image"] = ({name: {m: [c == "1" for c in s] for m, s in per.items()}
                                for name, per in json.loads(flags.read_text()).items()} if flags.is_file() else {})
        return record

    def params_of(self, record: Mapping[str, Any]) -> Any:
        """The parameters a written run used: ``record["params"]``, or for runs written before that key the
        defaults with every top-level key of the record that names a parameter."""
        fields = {f.name for f in dataclasses.fields(self.Params)}
        if record.get("params"):
            return build_params(self.Params, {k: v for k, v in record["params"].items() if k in fields}, self.name,
                                "experiment")
        given = {}
        for key in fields & set(record):  # an old record's key may name a table, not the parameter (toy_case)
            try:
                build_params(self.Params, {key: record[key]}, self.name, "experiment")
                given[key] = record[key]
            except ConfigError:
                continue
        return build_params(self.Params, given, self.name, "experiment")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "source": cls.source, "doc": " ".join((cls.__doc__ or "").split("\n\n")[0].split()),
                "parameters": describe_params(cls.Params)}


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: make an :class:`Experiment` subclass available under ``cls.name``."""
    if not cls.name or not cls.source:
        raise ValueError(f"{cls.__name__} needs a name and a source (the paper's figure or table)")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, TrainingParams)):
        raise ValueError(f"{cls.__name__}.Params must derive from TrainingParams")
    return EXPERIMENTS.add(cls.name, cls)


def flags_to_lists(per_sample: Mapping[str, Any]) -> dict[str, list[bool]]:
    """Per-image flags (tensors or lists) as lists of bools, for a record."""
    return {k: [bool(v) for v in (flags.tolist() if hasattr(flags, "tolist") else flags)]
            for k, flags in per_sample.items()}


__all__ = ["EXPERIMENTS", "Experiment", "TrainingParams", "flags_to_lists", "register_experiment"]

"""Run opening: finding, reusing, resuming and loading runs under ``outputs/runs``, with one reuse policy.

A run folder records its status in ``metrics.json`` (:mod:`atkit.training.trainer`). Whoever asks for a run of a
configuration (the train and ablation notebooks through :func:`open_run`, the motivation notebooks through
:func:`train_or_load`, ``atkit sweep`` with torchrun) goes through :func:`reuse_action`, the one table that
says what an identical earlier run is good for:

======================================  ===========  =================================================
status in ``metrics.json``              lock free    lock held by a live process
======================================  ===========  =================================================
``finished``                            reuse        refuse (it is being evaluated)
``stopped``, ``interrupted``            resume       refuse
``running`` (its process died)          resume       refuse (another process trains there now)
``failed``, ``created``, anything else  refuse       refuse
======================================  ===========  =================================================

*reuse*: nothing left to train; *resume*: continue from its last checkpoint; *refuse*: leave the folder as it
is (a failed run stays for inspection: resuming would repeat its error) and, unless another run qualifies,
start a new one. Among several qualifying runs a finished one wins, then the newest resumable one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional

import torch.nn as nn
import yaml

from ..core.paths import resolve_input_path, resolve_output_path
from ..core.utils import ConfigError, FolderLock
from ..data import load_dataset
from .config import RunConfig, load_config
from .trainer import Trainer, train_to_end

# Keys that do not change what a run computes.
_IGNORED_KEYS = {"name", "out_dir", "device", "eval", "logging", "threads"}

#: The statuses :class:`atkit.training.trainer.Trainer` writes into ``metrics.json``, by what they allow.
FINISHED = "finished"
RESUMABLE = ("stopped", "interrupted", "running")  # "running" is resumable only once its process died
NOT_REUSED = ("failed", "created")  # failed: kept for inspection; created: never trained (or being set up)
RUN_STATUSES = (FINISHED,) + RESUMABLE + NOT_REUSED

ReuseAction = Literal["reuse", "resume", "refuse"]


def reuse_action(status: Optional[str], locked: bool) -> ReuseAction:
    """What an identical earlier run with ``status`` is good for (the table in this module's docstring):
    ``"reuse"`` (finished), ``"resume"`` (stopped, interrupted, or running with a free lock) or ``"refuse"``
    (its lock is held by a live process, it failed, it never started, or its status is unknown)."""
    if locked:
        return "refuse"
    if status == FINISHED:
        return "reuse"
    if status in RESUMABLE:
        return "resume"
    return "refuse"


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in _IGNORED_KEYS:
        d.pop(key, None)
    d["threat"] = cfg.threat_model().to_dict()
    d["epochs"] = cfg.resolved_epochs()
    d["lr"] = cfg.resolved_lr()
    d["batch_size"] = cfg.resolved_batch_size()
    return d


def iter_runs(out_dir: str | Path = "outputs/runs") -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """Yield ``(run_dir, config_dict, metrics_dict)`` for every run folder with a config and metrics
    (a relative ``out_dir`` is read against the project root: :func:`atkit.core.paths.resolve_output_path`)."""
    out_dir = resolve_output_path(out_dir)
    if not out_dir.is_dir():
        return
    for run_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        cfg_path, met_path = run_dir / "config.yaml", run_dir / "metrics.json"
        if not cfg_path.is_file():
            continue
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
            metrics = json.loads(met_path.read_text()) if met_path.is_file() else {"status": "created"}
        except (OSError, ValueError, yaml.YAMLError):
            continue
        yield run_dir, cfg, metrics


def data_fingerprint(config: RunConfig) -> str:
    """The fingerprint (:meth:`atkit.data.ImageDataset.fingerprint`) of the data ``config`` trains on."""
    return load_dataset(config.dataset, **config.data).fingerprint()


def _matching_runs(config: RunConfig, out_dir: str | Path | None, check_data: bool,
                   ) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(run_dir, metrics)`` of every run that computes the same thing as ``config``, oldest first.

    With ``check_data`` the run must also have recorded the fingerprint of the data ``config`` loads now
    (loaded once, only when some configuration matches); a run that recorded none never matches."""
    out_dir = out_dir if out_dir is not None else config.out_dir
    target = _comparable(config)
    fingerprint = None
    for run_dir, cfg_d, metrics in iter_runs(out_dir):
        try:
            other = _comparable(RunConfig.from_dict(cfg_d))
        except Exception:
            continue
        if other != target:
            continue
        if check_data:
            if fingerprint is None:
                fingerprint = data_fingerprint(config)
            if metrics.get("data_fingerprint") != fingerprint:
                continue
        yield run_dir, metrics


def _action_of(run_dir: Path, metrics: Mapping[str, Any]) -> ReuseAction:
    """:func:`reuse_action` of one run folder (its recorded status, and whether a live process holds its lock)."""
    return reuse_action(metrics.get("status"), FolderLock(run_dir).is_locked())


def find_run(config: RunConfig, out_dir: str | Path | None = None, status: str = "finished", *,
             check_data: bool = True) -> Optional[Path]:
    """The newest run folder whose configuration computes the same thing as ``config`` and has ``status``.

    Unfinished runs whose folder lock is held (another live process trains there) are never returned.
    With ``check_data`` (the default) the run must also have been trained on the same bytes: its recorded
    data fingerprint must equal that of the data ``config`` loads now (loaded once, only when some run's
    configuration matches). A run that recorded no fingerprint is never reused.
    """
    found = None
    for run_dir, metrics in _matching_runs(config, out_dir, check_data):
        if metrics.get("status") != status:
            continue
        if status != FINISHED and FolderLock(run_dir).is_locked():
            continue  # a live process trains in it (a "running" run whose process died has a free lock)
        found = run_dir
    return found


def select_run(config: RunConfig, out_dir: str | Path | None = None, *, check_data: bool = True,
               ) -> tuple[Optional[ReuseAction], Optional[Path]]:
    """``("reuse", run_dir)`` for the newest identical finished run, else ``("resume", run_dir)`` for the
    newest identical resumable one (:func:`reuse_action`), else ``(None, None)``: start a new run."""
    reusable = resumable = None
    for run_dir, metrics in _matching_runs(config, out_dir, check_data):
        action = _action_of(run_dir, metrics)
        if action == "reuse":
            reusable = run_dir
        elif action == "resume":
            resumable = run_dir
    if reusable is not None:
        return "reuse", reusable
    if resumable is not None:
        return "resume", resumable
    return None, None


def open_run(config: Any, *, runs_dir: Optional[str | Path] = None, resume: Optional[str | Path] = None,
             reuse: bool = True, **trainer_kwargs: Any) -> tuple[Trainer, str]:
    """A :class:`~atkit.training.trainer.Trainer` for ``config`` and how it was obtained: ``"resumed"`` (``resume`` given,
    or an identical resumable run found), ``"reused"`` (an identical finished run: nothing left to train) or
    ``"new"``; the choice is :func:`select_run`'s. ``reuse=False`` always starts a new run."""
    if resume is not None:
        return Trainer.resume(resume, **trainer_kwargs), "resumed"
    if reuse:
        runs_dir = resolve_output_path(runs_dir if runs_dir is not None else config.out_dir)
        action, run_dir = select_run(config, runs_dir)
        if run_dir is not None:
            return Trainer.resume(run_dir, **trainer_kwargs), "reused" if action == "reuse" else "resumed"
    return Trainer.new(config, **trainer_kwargs), "new"


def train_or_load(config: RunConfig | dict | str | Path, *, reuse: bool = True, progress: bool = True,
                  evaluate_final: bool = False) -> tuple[nn.Module, Path, bool]:
    """Return ``(final model, run_dir, reused)``: reuse a finished identical run, resume an unfinished one,
    or train a new one (the choice is :func:`open_run`'s), training it to the end."""
    config = load_config(config) if not isinstance(config, RunConfig) else config
    trainer, how = open_run(config, reuse=reuse, progress=progress)
    if how != "reused":
        train_to_end(trainer, evaluate_final=evaluate_final)
    return trainer.final_model().eval(), trainer.run_dir, how == "reused"


def run_config_from(config: Optional[str | Path | Mapping[str, Any]] = None, *,
                    overrides: Optional[Mapping[str, Any]] = None, **values: Any) -> RunConfig:
    """A validated RunConfig from a YAML path (or dict) with the notebook parameters applied on top.

    ``values`` whose value is None are left to the config (or RunConfig's default); ``eval`` is merged
    key by key; ``overrides`` (any RunConfig keys) are applied last.
    """
    if config is None:
        d: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        d = json.loads(json.dumps(dict(config), default=str))
    else:
        path = resolve_input_path(config)  # the config's path from the project root also works in notebooks/
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        d = yaml.safe_load(path.read_text()) or {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "eval" and isinstance(value, Mapping):
            d["eval"] = {**(d.get("eval") or {}), **value}
        else:
            d[key] = value
    for key, value in (overrides or {}).items():
        if key == "eval" and isinstance(value, Mapping):
            d["eval"] = {**(d.get("eval") or {}), **value}
        else:
            d[key] = value
    return load_config(d)


__all__ = ["FINISHED", "NOT_REUSED", "RESUMABLE", "RUN_STATUSES", "data_fingerprint", "find_run", "iter_runs",
           "open_run", "reuse_action", "run_config_from", "select_run", "train_or_load"]

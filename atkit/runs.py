"""Finding, reusing and loading finished runs under ``outputs/runs``.

Notebooks that need a trained model (the motivation experiments) first look for a finished run
with the same configuration and train only when there is none.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import torch.nn as nn
import yaml

from .config import RunConfig, load_config
from .paths import resolve_output_path
from .utils import FolderLock

# Keys that do not change what a run computes.
_IGNORED_KEYS = {"name", "out_dir", "device", "eval", "logging"}


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
    (a relative ``out_dir`` is read against the project root: :func:`atkit.paths.resolve_output_path`)."""
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
    from .data import load_dataset

    return load_dataset(config.dataset, **config.data).fingerprint()


def find_run(config: RunConfig, out_dir: str | Path | None = None, status: str = "finished", *,
             check_data: bool = True) -> Optional[Path]:
    """The newest run folder whose configuration computes the same thing as ``config`` and has ``status``.

    Unfinished runs whose folder lock is held (another live process trains there) are never returned.
    With ``check_data`` (the default) the run must also have been trained on the same bytes: its recorded
    data fingerprint must equal that of the data ``config`` loads now (loaded once, only when some run's
    configuration matches). A run that recorded no fingerprint is never reused.
    """
    out_dir = out_dir if out_dir is not None else config.out_dir
    target = _comparable(config)
    found, fingerprint = None, None
    for run_dir, cfg_d, metrics in iter_runs(out_dir):
        if metrics.get("status") != status:
            continue
        if status != "finished" and FolderLock(run_dir).is_locked():
            continue  # a live process trains in it (a "running" run whose process died has a free lock)
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
        found = run_dir
    return found


def train_or_load(config: RunConfig | dict | str | Path, *, reuse: bool = True, progress: bool = True,
                  evaluate_final: bool = False) -> tuple[nn.Module, Path, bool]:
    """Return ``(final model, run_dir, reused)``: reuse a finished identical run, resume an unfinished one,
    or train a new one."""
    from .train import Trainer, train

    config = load_config(config) if not isinstance(config, RunConfig) else config
    if reuse:
        done = find_run(config)
        if done is not None:
            trainer = Trainer.resume(done, progress=progress)
            return trainer.final_model().eval(), done, True
        partial = find_run(config, status="running") or find_run(config, status="interrupted")
        if partial is not None:
            trainer = train(None, resume=partial, progress=progress, evaluate_final=evaluate_final)
            return trainer.final_model().eval(), partial, False
    trainer = train(config, progress=progress, evaluate_final=evaluate_final)
    return trainer.final_model().eval(), trainer.run_dir, False

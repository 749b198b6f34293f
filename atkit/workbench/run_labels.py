"""The labels that name a run and what it computes, for tables, legends and grouping over seeds.

:func:`setting_of` is what a run computes without its seed and bookkeeping (defaults resolved, so two configs that
train the same way give equal settings; :func:`stable_hash` names it); :func:`run_label`, :func:`setting_label`,
:func:`dataset_label` and :func:`data_size_label` are the short human-readable names the tables and figures of
:mod:`atkit.workbench.results` show.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..attacks import ThreatModel
from ..experiments import reference as ref_mod
from ..training.augment import TRAINING_OPTION_DEFAULTS, training_label
from ..training.config import RunConfig

_RUN_KEYS_IGNORED = ("seed", "name", "out_dir", "device", "eval", "logging", "threads")


def dataset_label(config: Mapping[str, Any]) -> tuple[str, str]:
    """``(dataset, variant)`` of a run config: a ``folder`` dataset is named after its root folder
    (``data/cifar10-jpeg`` -> ``("cifar10", "jpeg")``); a torchvision one is ``("cifar10", "original")``."""
    name = str(config.get("dataset", ""))
    if name == "folder":
        root = Path(str((config.get("data") or {}).get("root", "folder"))).name.lower()
        if root.endswith("-jpeg") or root.endswith("_jpeg"):
            return root[:-5], "jpeg"
        return root, "folder"
    if name in ("cifar10", "cifar100", "svhn", "tiny-imagenet"):
        return name, "original"
    return name, name


def threat_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config's threat model with its defaults filled in (as written, when it no longer parses)."""
    try:
        return ThreatModel.from_dict(config.get("threat") or {}).to_dict()
    except Exception:
        return dict(config.get("threat") or {})


def _resolved_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return ref_mod.resolved_params(method, params)
    except Exception:  # a method no longer registered: compare what was written
        return dict(params)


def varied_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of ``params`` that differ from ``method``'s defaults (for labels)."""
    try:
        defaults = ref_mod.resolved_params(method, {})
        resolved = ref_mod.resolved_params(method, params)
    except Exception:
        return dict(params)
    return {k: v for k, v in resolved.items() if defaults.get(k) != v}


def setting_label(method: str, params: Mapping[str, Any]) -> str:
    """``"pgd_at+rpat (rp_distance=kl)"``: the method and its non-default hyperparameters."""
    varied = varied_params(method, params)
    if not varied:
        return method
    return f"{method} ({', '.join(f'{k}={_fmt_value(v)}' for k, v in sorted(varied.items()))})"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def data_size_label(config: Mapping[str, Any]) -> str:
    """``"synthetic n_train=2000 n_test=500"`` (the sizes the config sets) or ``"cifar10"`` (no size set)."""
    dataset, variant = dataset_label(config)
    data = config.get("data") or {}
    name = dataset if variant in ("original", dataset) else f"{dataset} ({variant})"
    sizes = [f"{k}={data[k]}" for k in ("n_train", "n_test") if data.get(k) is not None]
    return " ".join([name, *sizes])


def run_label(config: Mapping[str, Any]) -> str:
    """What a run computes in one line: the method and its non-default hyperparameters, the data and its
    size, the model, the threat model when not l-inf 8/255, and the epochs:
    ``"pgd_at+rpat (rp_distance=kl) | synthetic n_train=2000 n_test=500 | small_cnn | 5 ep"``."""
    method = str(config.get("method", ""))
    parts = [setting_label(method, config.get("method_params") or {}), data_size_label(config),
             str(config.get("model", "?"))]
    if training_label(config):  # CutMix, label smoothing (atkit.training.augment)
        parts.append(training_label(config))
    threat = threat_of(config)
    norm, eps = threat.get("norm"), threat.get("eps")
    if isinstance(eps, (int, float)) and (norm != "linf" or abs(float(eps) - 8 / 255) > 1e-6):
        parts.append(f"{norm} {float(eps) * 255:.4g}/255")
    epochs = setting_of(config).get("epochs", config.get("epochs"))
    if epochs is not None:
        parts.append(f"{epochs} ep")
    return " | ".join(parts)


def unique_run_labels(frame: pd.DataFrame) -> pd.Series:
    """``run_label`` of each row, with ``" #<setting hash>"`` appended where different settings (e.g. other
    lr or schedule, which the label leaves out) would share one label."""
    if frame.empty or "run_label" not in frame:
        return frame.get("run_label", pd.Series(dtype=object))
    per_label = frame.groupby("run_label")["setting"].nunique()
    shared = set(per_label[per_label > 1].index)
    return pd.Series([f"{lab} #{setting[:6]}" if lab in shared else lab
                      for lab, setting in zip(frame["run_label"], frame["setting"])], index=frame.index)


def setting_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run computes, without its seed and bookkeeping: defaults resolved, so two configs that
    train the same way give equal dicts."""
    d = {k: v for k, v in config.items() if k not in _RUN_KEYS_IGNORED
         and not (k in TRAINING_OPTION_DEFAULTS and v == TRAINING_OPTION_DEFAULTS[k])}  # as configs before them
    d["threat"] = threat_of(config)
    d["method_params"] = _resolved_params(str(config.get("method", "")), config.get("method_params") or {})
    try:
        cfg = RunConfig.from_dict({k: v for k, v in config.items() if k != "init_checkpoint"})
        d.update(epochs=cfg.resolved_epochs(), lr=cfg.resolved_lr(), batch_size=cfg.resolved_batch_size())
    except Exception:
        pass
    return d


def stable_hash(obj: Any, length: int = 10) -> str:
    """Hex digest of the canonical JSON of ``obj`` (sorted keys): stable across processes and runs."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


__all__ = ["data_size_label", "dataset_label", "run_label", "setting_label", "setting_of", "stable_hash",
           "threat_of", "unique_run_labels", "varied_params"]

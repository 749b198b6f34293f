"""What produced an evaluation: software versions, device, precision, batch size, checkpoint, images, budgets.

:func:`build_provenance` is the one place that assembles the ``provenance`` record stored in every
evaluation JSON (:meth:`atkit.evaluation.EvalResult.to_dict`) and in a run's ``eval.json``:

* ``software``: atkit version and git commit (when atkit runs from a git checkout; ``git_dirty``
  when it has uncommitted changes), Python, torch, torchvision, pyautoattack, numpy;
* ``threads``: torch's CPU thread count, who chose it and why (:func:`atkit.core.threads.threads_record`);
* ``device`` (type and name), ``precision`` (``fp32`` with TF32 off, ``fp32+tf32`` or ``bf16`` autocast),
  ``batch_size``, ``seed``, the threat model;
* ``checkpoint``: path, SHA-256 and size of the weights file (:func:`checkpoint_record`);
* ``images``: dataset, data fingerprint and the test indices (:func:`atkit.training.trainer.test_images_record`);
* ``attacks``: per attack its full budget, for AutoAttack the version, seed, and per stage the
  iterations, restarts, target classes and Square queries actually configured (:func:`autoattack_budget`);
* ``warnings``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from .. import __version__
from .paths import PACKAGE_DIR
from .threads import threads_record
from .utils import file_sha256

PROVENANCE_FORMAT = "atkit-provenance/1"


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> tuple[Optional[str], Optional[bool]]:
    """``(commit, dirty)`` of the git checkout atkit is imported from, ``(None, None)`` outside one."""
    root = PACKAGE_DIR.parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def software_versions() -> dict[str, Any]:
    """atkit (version, git commit, dirty flag), Python, torch, torchvision, pyautoattack and numpy versions."""
    return dict(_software_versions())


@functools.lru_cache(maxsize=1)
def _software_versions() -> dict[str, Any]:  # once per process: evaluate() runs every epoch
    commit, dirty = git_commit()
    return {"atkit": __version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _package_version("torchvision"), "pyautoattack": _package_version("pyautoattack"),
            "numpy": _package_version("numpy"), "platform": platform.platform()}


def device_record(device: Optional[str | torch.device]) -> dict[str, Any]:
    """``{"device": "cuda:0", "name": "NVIDIA H200"}``; on the CPU the processor's name where known."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return {"device": str(dev), "name": torch.cuda.get_device_name(dev)}
    return {"device": str(dev), "name": platform.processor() or platform.machine() or "cpu",
            "threads": torch.get_num_threads()}


def precision_of(model: nn.Module, device: Optional[str | torch.device]) -> str:
    """``"bf16"`` for a bf16 autocast view (:class:`atkit.core.fast.AutocastModel`), else ``"fp32"``, or
    ``"fp32+tf32"`` when CUDA's TF32 matmuls/convolutions are on at the time of evaluation."""
    dtype = getattr(model, "dtype", None)
    if type(model).__name__ == "AutocastModel" and dtype == torch.bfloat16:
        return "bf16"
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32):
        return "fp32+tf32"
    return "fp32"


def checkpoint_record(path: str | Path, data: Optional[bytes] = None) -> dict[str, Any]:
    """Path (absolute), SHA-256 and size in bytes of a checkpoint file; of ``data`` when given (the bytes that
    were loaded: :func:`atkit.training.checkpoints.load_checkpoint_with_record`), else of the file as it is now."""
    path = Path(path)
    if data is not None:
        return {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def autoattack_budget(aa: Any, attacks: Sequence[str], restarts_overridden: bool = False) -> dict[str, Any]:
    """The budget an official ``AutoAttack`` object will run, per stage (read from the object itself)."""
    stages: dict[str, Any] = {}
    for name in attacks:
        if name in ("apgd-ce", "apgd-dlr"):
            stages[name] = {"n_iter": aa.apgd.n_iter, "n_restarts": aa.apgd.n_restarts, "eot_iter": aa.apgd.eot_iter}
        elif name == "apgd-t":
            t = aa.apgd_targeted
            stages[name] = {"n_iter": t.n_iter, "n_restarts": t.n_restarts, "n_target_classes": t.n_target_classes}
        elif name in ("fab", "fab-t"):
            # AutoAttack runs FAB-T with one restart per target class unless restarts are overridden.
            restarts = 1 if name == "fab-t" and not restarts_overridden else aa.fab.n_restarts
            stages[name] = {"n_iter": aa.fab.n_iter, "n_restarts": restarts,
                            "n_target_classes": aa.fab.n_target_classes if name == "fab-t" else None}
        elif name == "square":
            stages[name] = {"n_queries": aa.square.n_queries, "n_restarts": aa.square.n_restarts,
                            "p_init": aa.square.p_init}
    return {"version": aa.version, "seed": aa.seed, "norm": aa.norm, "eps": float(aa.epsilon), "attacks": list(attacks),
            "stages": stages}


def attack_budgets(details: Mapping[str, Mapping[str, Any]], threat: Mapping[str, Any]) -> dict[str, Any]:
    """Per attack its budget: the threat model plus the attack's settings (``details`` of an EvalResult)."""
    out = {}
    for name, info in details.items():
        entry = {k: v for k, v in info.items() if k not in ("seconds", "per_attack", "resumed", "ran_now")}
        if name not in ("clean",):
            entry.setdefault("eps", threat.get("eps"))
            entry.setdefault("norm", threat.get("norm"))
        out[name] = entry
    return out


def build_provenance(*, model: Optional[nn.Module] = None, device: Optional[str | torch.device] = None,
                     batch_size: Optional[int] = None, threat: Optional[Mapping[str, Any]] = None,
                     seed: Optional[int] = None, details: Optional[Mapping[str, Mapping[str, Any]]] = None,
                     warnings: Sequence[str] = (), checkpoint: Optional[str | Path | Mapping[str, Any]] = None,
                     images: Optional[Mapping[str, Any]] = None, precision: Optional[str] = None) -> dict[str, Any]:
    """The provenance record of one evaluation (see the module docstring); missing parts are None."""
    if checkpoint is not None and not isinstance(checkpoint, Mapping):
        checkpoint = checkpoint_record(checkpoint)
    if precision is None and model is not None:
        precision = precision_of(model, device)
    return {
        "format": PROVENANCE_FORMAT,
        "software": software_versions(),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "device": device_record(device),
        "threads": threads_record(),
        "precision": precision,
        "batch_size": batch_size,
        "seed": seed,
        "threat": dict(threat) if threat is not None else None,
        "checkpoint": dict(checkpoint) if checkpoint is not None else None,
        "images": dict(images) if images is not None else None,
        "attacks": attack_budgets(details or {}, threat or {}),
        "warnings": list(warnings),
    }


def attach_provenance(result: dict[str, Any], **parts: Any) -> dict[str, Any]:
    """Add ``parts`` (e.g. ``checkpoint=checkpoint_record(path)``, ``images=...``) to the provenance of an
    evaluation dict and of each of its dummy-class ``protocols`` entries; returns ``result``."""
    for entry in [result, *((result.get("protocols") or {}).values())]:
        if entry is not result and entry.get("provenance") is result.get("provenance"):
            continue
        prov = entry.get("provenance")
        if prov is None:
            prov = entry["provenance"] = {}
        prov.update(parts)
    return result


__all__ = ["PROVENANCE_FORMAT", "attach_provenance", "attack_budgets", "autoattack_budget", "build_provenance", "checkpoint_record",
           "device_record", "git_commit", "precision_of", "software_versions"]

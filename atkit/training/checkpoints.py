"""A run's own checkpoints: what they hold, writing them, resuming from them, and rebuilding their models.

They take the run's explicit state (:class:`atkit.training.state.RunState`), never the trainer:
:func:`checkpoint_payload` is everything an exact resume needs (weights, optimiser, averages, method state,
history, RNG states, config, data fingerprint); :func:`save_checkpoint` writes it atomically as
``checkpoints/last.pt`` and, for the best epoch, its weights as ``best.pt`` (:func:`best_state`);
:func:`restore_checkpoint` loads it back after :func:`check_checkpoint_compatible` and the data check;
:func:`init_weights_from_checkpoint` starts a run from another run's (or someone else's) weights;
:func:`repair_best_checkpoint` rebuilds a ``best.pt`` that a kill left behind its ``last.pt``;
:func:`best_model` and :func:`load_model` rebuild the model of a run or of any atkit checkpoint. Reading the files
safely is :mod:`atkit.core.checkpoint_files`.
"""
from __future__ import annotations

import copy
import random
import shlex
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..core.checkpoint_files import extract_state_dict, load_checkpoint_file, load_weights, require_atkit_checkpoint
from ..core.utils import ConfigError, atomic_torch_save, guarded_write
from ..models import build_model
from ..models.external import fit_state_to_model
from .config import RunConfig
from .state import RunState

CHECKPOINT_FORMAT = "atkit-checkpoint-1"
#: What ``best.pt`` keeps of a full checkpoint: the weights to evaluate, not the optimiser or RNG states.
BEST_KEYS = ("format", "model_name", "num_classes", "num_outputs", "epoch", "model", "ema", "averaged_model", "config",
             "best_metric")


def rng_state() -> dict[str, Any]:
    """The torch, numpy, python (and CUDA) RNG states, for an exact resume."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_payload(state: RunState) -> dict[str, Any]:
    """Everything ``checkpoints/last.pt`` holds: enough to continue the run exactly where it is."""
    averaged = state.averaged_model()
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": state.config.model,
        "num_classes": state.num_classes,
        "num_outputs": getattr(state.model, "num_outputs", None),
        "epoch": state.epoch,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "averaged_model": averaged.state_dict() if averaged is not None else None,
        "method": state.method.state_dict(),
        "history": state.history,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "rng": rng_state(),
        "config": state.config.to_dict(),
        "data_fingerprint": state.data_fingerprint,
    }


def best_state(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a full checkpoint that ``best.pt`` keeps (:data:`BEST_KEYS`)."""
    return {k: payload[k] for k in BEST_KEYS}


def _save_best(ckpt_dir: Path, payload: Mapping[str, Any]) -> None:
    best = best_state(payload)
    guarded_write(ckpt_dir / "best.pt", lambda: atomic_torch_save(best, ckpt_dir / "best.pt"))


def save_checkpoint(state: RunState, dist: Any, best: bool = False) -> None:
    """Write ``last.pt`` (and ``best.pt`` when ``best``) atomically; under torchrun (``dist``:
    :class:`atkit.training.distributed.DistContext`) every rank's RNG state goes in (exact resume), only rank 0
    writes and the others wait."""
    payload = checkpoint_payload(state)
    if dist.is_distributed:
        payload["rng_ranks"] = dist.all_gather_object(rng_state())
    if dist.is_main:
        last = state.ckpt_dir / "last.pt"
        guarded_write(last, lambda: atomic_torch_save(payload, last))
        if best:
            _save_best(state.ckpt_dir, payload)
    dist.barrier()


def check_checkpoint_compatible(state: dict[str, Any], model_name: str, model: nn.Module,
                                path: Optional[str | Path] = None) -> None:
    """Refuse a checkpoint of another architecture or class count, naming both."""
    where = "checkpoint" if path is None else f"checkpoint {str(path)!r}"
    if state.get("model_name") not in (None, model_name):
        raise ConfigError(f"{where} is for model {state.get('model_name')!r}, but the run uses {model_name!r}: "
                          "the checkpoint and the run's config disagree")
    expected = getattr(model, "num_outputs", None)
    if state.get("num_outputs") is not None and expected is not None and state["num_outputs"] != expected:
        raise ConfigError(f"{where} has {state['num_outputs']} outputs, but the model has {expected} "
                          "(a different class count or dummy-class head): the checkpoint and the run's config "
                          "disagree (dataset, num_classes or dummy classes)")


def restore_checkpoint(state: RunState, path: str | Path, dist: Any) -> None:
    """Load a ``last.pt`` into ``state``: weights, optimiser, averages, method state, history, RNG states (this
    rank's, under torchrun).

    Refused (:class:`ConfigError`) for another architecture or class count, and for a run whose data changed
    since it started (its recorded fingerprint differs: resuming would silently mix two datasets in one run)."""
    path = Path(path)
    # best.pt cannot be resumed (no optimiser or RNG state): the remedy for a damaged last.pt is a fresh start
    # of this run, or a new run from best.pt's weights.
    resume_hint = (f"move it aside (mv {shlex.quote(str(path))} {shlex.quote(str(path) + '.damaged')}) and run "
                   f"--resume {shlex.quote(str(path.parent.parent))} again to retrain this run from epoch 0, or start a new run with "
                   "init_checkpoint: "
                   f"{str(path.parent / 'best.pt')!r} (its weights, without the optimiser state)")
    saved = require_atkit_checkpoint(load_checkpoint_file(path, state.device, hint=resume_hint), path,
                                     keys=("model", "optimizer", "epoch", "history", "rng"))
    check_checkpoint_compatible(saved, state.config.model, state.model, path)
    recorded = saved.get("data_fingerprint")
    if recorded and recorded != state.data_fingerprint:
        raise ConfigError(f"{str(path)!r} was trained on data with fingerprint {recorded}, but "
                          f"{state.config.dataset!r} with data={state.config.data} now gives "
                          f"{state.data_fingerprint}; the data changed since the run started, start a new run")
    load_weights(state.model, saved["model"], f"checkpoint {str(path)!r}")
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.ema is not None and saved.get("ema") is not None:
        state.ema.load_state_dict(saved["ema"])
    state.method.load_state_dict(saved.get("method") or {})
    state.epoch = saved["epoch"]
    state.history = saved["history"]
    state.best_metric = saved["best_metric"]
    state.best_epoch = saved["best_epoch"]
    set_rng_state(saved["rng"])
    ranks = saved.get("rng_ranks")
    if dist.is_distributed and ranks and len(ranks) == dist.world_size:
        set_rng_state(ranks[dist.rank])


def init_weights_from_checkpoint(state: RunState, path: str | Path) -> None:
    """Load only the weights (and EMA) of another run's checkpoint into ``state``: a fine-tuning start.

    ``path`` is an atkit checkpoint or someone else's state dict (wrappers as :func:`extract_state_dict`,
    RobustBench key names and normalization buffers as :func:`atkit.models.external.fit_state_to_model`); a method
    with ``adapt_init_checkpoint`` may reshape it first (DUCAT grows a C-class head to its 2C head, DUCAT,
    Algorithm 1)."""
    raw = load_checkpoint_file(path, state.device)
    if isinstance(raw, dict) and str(raw.get("format", "")).startswith("atkit-checkpoint"):
        saved = dict(raw)
    else:  # someone else's weights, for the run's architecture (config.model)
        source = f"init_checkpoint {str(path)!r}"
        saved = {"model": fit_state_to_model(state.model, extract_state_dict(raw, source), source)[0]}
    adapt = getattr(state.method, "adapt_init_checkpoint", None)
    if adapt is not None:
        saved = adapt(saved, state.model)
    check_checkpoint_compatible(saved, state.config.model, state.model, path)
    load_weights(state.model, saved["model"], f"init_checkpoint {str(path)!r}")
    if state.ema is not None and saved.get("ema") is not None:
        state.ema.load_state_dict(saved["ema"])


def repair_best_checkpoint(state: RunState) -> None:
    """A run killed between writing ``last.pt`` and ``best.pt`` of its best epoch: rebuild ``best.pt`` from
    ``state`` (just loaded from ``last.pt``)."""
    if state.best_epoch is None or state.best_epoch != state.epoch:
        return
    path = state.ckpt_dir / "best.pt"
    if path.is_file():
        try:
            if load_checkpoint_file(path, "cpu").get("epoch") == state.epoch:
                return
        except Exception:  # unreadable: rewrite it
            pass
    _save_best(state.ckpt_dir, checkpoint_payload(state))


def best_model(state: RunState) -> Optional[nn.Module]:
    """The model of the run's ``best.pt`` (its weight average or EMA when the run keeps one), or None."""
    path = state.ckpt_dir / "best.pt"
    if not path.is_file():
        return None
    saved = load_checkpoint_file(path, state.device)
    model = copy.deepcopy(state.model)
    if saved.get("averaged_model") is not None:
        model.load_state_dict(saved["averaged_model"])
        return model
    if state.ema is not None and saved.get("ema") is not None:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(state.config.ema_decay), use_buffers=True)
        ema.load_state_dict(saved["ema"])
        return ema.module
    model.load_state_dict(saved["model"])
    return model


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` (else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"no checkpoint in {str(path)!r} (looked for checkpoints/best.pt and last.pt)")
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu", which: str = "model",
               state: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Rebuild the model stored in a checkpoint (``last.pt`` or ``best.pt``), or in a run folder's best/last.

    ``which="ema"``: the EMA weights, or the method's own weight average (ReBAT, RPAT++) when it keeps one.
    ``state``: the checkpoint already loaded from ``path`` (:func:`load_checkpoint_with_record`), not read again."""
    path = resolve_checkpoint(path)
    state = require_atkit_checkpoint(load_checkpoint_file(path, device) if state is None else state, path,
                                     keys=("model", "config", "num_classes"))
    config = RunConfig.from_dict(state["config"])
    params = dict(config.model_params)
    if config.build_method().needs_dummy_classes:
        params["dummy_classes"] = True
    model = build_model(config.model, num_classes=state["num_classes"], **params)
    if which == "ema" and state.get("ema") is None and state.get("averaged_model") is not None:
        model.load_state_dict(state["averaged_model"])
    elif which == "ema" and state.get("ema") is not None:
        ema = AveragedModel(model, use_buffers=True)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        load_weights(model, state["model"], f"checkpoint {str(path)!r}")
    return model.to(device).eval()


__all__ = ["BEST_KEYS", "CHECKPOINT_FORMAT", "best_model", "best_state", "check_checkpoint_compatible",
           "checkpoint_payload", "init_weights_from_checkpoint", "load_model", "repair_best_checkpoint",
           "resolve_checkpoint", "restore_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

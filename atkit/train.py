"""The trainer: one loop for every method, run directories, atomic checkpoints and exact resume.

A run lives in its own folder under ``outputs/runs/`` (never shared with another run)::

    config.yaml      the resolved configuration
    metrics.csv      one row per epoch (loss parts, train/test clean and robust accuracy, lr, time)
    metrics.json     the same rows plus the run's status ("running", "finished", "failed", "stopped")
    checkpoints/last.pt   everything needed to resume (weights, optimiser, averages, RNG states)
    checkpoints/best.pt   weights of the epoch with the best selection metric
    eval.json        final evaluation of the best and final models

Every file is written atomically (temporary file + rename), so a run killed at any moment resumes
from its last complete epoch.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoints import extract_state_dict, load_checkpoint_file, load_weights, require_atkit_checkpoint
from .config import RunConfig, drop_last_batch, load_config
from .distributed import init_from_env
from .fast import eval_model, exact_fp32, resolve_channels_last, resolve_precision, training_model, training_precision
from .methods import LossOutput, Method, StepContext
from .models import predict_labels
from .paths import resolve_output_path
from .progress import Phases, default_stream, progress_bar
from .utils import (ConfigError, FolderLock, atomic_torch_save, atomic_write_json, atomic_write_text,
                    resolve_device, seed_everything)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint, if any.

    ``epoch`` counts from 0 (the epoch that diverged); ``kept_epoch`` is the number of completed epochs in
    the kept ``checkpoints/last.pt``, or ``None`` when the run had written no checkpoint yet.
    """

    def __init__(self, epoch: int, step: int, kept_epoch: Optional[int] = None) -> None:
        if kept_epoch is None:
            kept = ("no checkpoint was kept: the run diverged before its first checkpoint (lower the learning rate "
                    "or check the method's terms, then start a new run)")
        else:
            kept = (f"its last good checkpoint, checkpoints/last.pt after {kept_epoch} completed epoch(s), was kept "
                    "(lower the learning rate or check the method's terms)")
        super().__init__(f"non-finite training loss at epoch {epoch}, step {step}; the run was stopped and {kept}")
        self.epoch, self.step, self.kept_epoch = epoch, step, kept_epoch


class OutputWriteError(RuntimeError):
    """A run file could not be written (disk full, folder not writable, ...).

    The message names the file and the system's reason; files written before are intact (every
    write is atomic), so the run resumes from its last checkpoint once the cause is fixed.
    """

    def __init__(self, path: str | Path, error: OSError) -> None:
        reason = error.strerror or str(error)
        code = f"errno {error.errno}, " if error.errno is not None else ""
        super().__init__(f"could not write {str(path)!r}: {reason} ({code}{type(error).__name__}); files saved "
                         "before are intact: free space or fix permissions, then resume with --resume RUN_DIR")
        self.path, self.errno, self.reason = Path(path), error.errno, reason


def _guarded(path: str | Path, write: Callable[[], None]) -> None:
    """Run ``write`` (an atomic write of ``path``), turning an OSError into :class:`OutputWriteError`."""
    try:
        write()
    except OSError as e:
        raise OutputWriteError(path, e) from e


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.<name>.*.tmp`` files that a killed atomic write left behind (never a real file)."""
    for tmp in folder.glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create and return a fresh folder ``out_dir/name`` (``name-2``, ``name-3``... if taken).

    ``mkdir`` without ``exist_ok`` is atomic, so two runs started at the same time never share a folder.
    A relative ``out_dir`` is read against the project root, not the working directory (:mod:`atkit.paths`).
    """
    out_dir = resolve_output_path(out_dir)
    for i in range(1, 100000):
        path = out_dir / (name if i == 1 else f"{name}-{i}")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:  # read-only or full disk: refuse before any work starts
            raise ConfigError(f"cannot create a run folder in out_dir {str(out_dir)!r}: {e.strerror or e} "
                              "(choose a writable out_dir / --out-dir)") from e
    raise RuntimeError(f"could not create a run folder for {name!r} in {out_dir}")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Prepared:
    """The data, model and method a config resolves to (built once, shared by trainer and notebooks)."""

    dataset: Any
    model: nn.Module
    method: Method
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    data_fingerprint: str  # of the whole dataset as loaded, before any validation split
    eval_indices: Optional[torch.Tensor] = None  # which images of the selection split eval_x holds


def prepare(config: RunConfig, device: torch.device) -> Prepared:
    """Load the dataset, build the model (dummy head when the method needs it) and the method."""
    from .data import load_dataset, split_validation
    from .models import build_model

    method = config.build_method()
    dataset = load_dataset(config.dataset, **config.data)
    fingerprint = dataset.fingerprint()
    if config.val_size > 0:
        dataset = split_validation(dataset, n_val=config.val_size, seed=config.seed)
        split = "val"
    else:
        split = "test"
    # Per-epoch selection images: class-stratified and the same for every seed (never "the first n").
    n_split = len(dataset.val_y if split == "val" else dataset.test_y)
    n_select = min(config.eval.n_test, n_split) if config.eval.n_test else None
    eval_x, eval_y, eval_idx = dataset.eval_subset(n_select, split=split)
    model_params = dict(config.model_params)
    if method.needs_dummy_classes:
        model_params["dummy_classes"] = True
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=dataset.num_classes, **model_params).to(device)
    return Prepared(dataset, model, method, to_float_images(eval_x), eval_y, fingerprint, eval_idx)


def test_images_record(dataset: Any, indices: torch.Tensor, fingerprint: Optional[str] = None) -> dict[str, Any]:
    """Which test images an evaluation used: dataset, fingerprint, and the indices (``"all"`` for the whole split)."""
    n_total = len(dataset.test_y)
    whole = len(indices) == n_total and bool(torch.equal(indices, torch.arange(n_total)))
    return {"dataset": dataset.name, "fingerprint": fingerprint or dataset.fingerprint(), "split": "test",
            "n": int(len(indices)), "of": int(n_total), "selection": "all" if whole else "stratified(seed=0)",
            "indices": "all" if whole else [int(i) for i in indices]}


def epoch_line(record: Mapping[str, Any], epochs: int, n_eval: Optional[int] = None) -> str:
    """One log line per epoch: ``epoch 3/10  loss 1.2345  test clean 45.20%, pgd10 30.10% (n=500)  4.1 s + eval 0.8 s``.

    Test accuracies are the per-epoch selection evaluation (online model; ``ema``/``wa`` for the averages);
    a partial epoch (stopped by :meth:`Trainer.request_stop`) says how many of its steps ran.
    """
    head = f"epoch {record.get('epoch')}/{epochs}"
    if record.get("partial"):
        head += f" (partial: {record.get('steps')}/{record.get('steps_per_epoch')} steps, not counted)"
    parts = [head]
    if record.get("train_loss") is not None:
        parts.append(f"loss {float(record['train_loss']):.4f}")
    tests = []
    for prefix, tag in (("test_", ""), ("ema_test_", "ema "), ("wa_test_", "wa ")):
        tests += [f"{tag}{k[len(prefix):-4]} {float(v):.2f}%" for k, v in record.items()
                  if k.startswith(prefix) and k.endswith("_acc")]
    if tests:
        parts.append("test " + ", ".join(tests) + (f" (n={n_eval})" if n_eval else ""))
    else:
        parts.append("test not evaluated this epoch (eval.every)")
    seconds = f"{float(record.get('train_time_s', 0.0)):.1f} s"
    if record.get("eval_time_s") is not None:
        seconds += f" + eval {float(record['eval_time_s']):.1f} s"
    parts.append(seconds)
    return "  ".join(parts)


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (as datasets store them) to float in [0, 1]; float input is returned as is."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class Trainer:
    """Trains ``config.method`` on ``config.dataset`` with SGD and the configured schedule.

    Use :meth:`Trainer.new` for a fresh run and :meth:`Trainer.resume` to continue one from its last
    checkpoint. ``callbacks`` are called as ``cb(trainer, record)`` after each epoch (live plots in
    notebooks). ``progress``: a bar over each epoch's steps, one :func:`epoch_line` per epoch and the final
    evaluation attack by attack (text under papermill, :mod:`atkit.progress`). :meth:`request_stop` ends the
    run cleanly after the current step, keeping what was measured; an epoch cut short is recorded with
    ``partial: true`` and not counted as done (resume repeats it from the last complete epoch's checkpoint).
    """

    def __init__(self, config: RunConfig, run_dir: Path, *, callbacks: Optional[list[Callable]] = None,
                 progress: bool = True, prepared: Optional[Prepared] = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        # Held while this process writes the run (fit, final evaluation): no second writer, even in another process.
        self._lock = FolderLock(self.run_dir)
        self.callbacks = list(callbacks or [])
        self.progress = progress
        # One process unless launched by torchrun; then cuda:LOCAL_RANK and a process group (atkit.distributed).
        self.dist = init_from_env(config.device)
        self.device = self.dist.device
        self._stop_requested = False
        seed_everything(config.seed)
        prep = prepared or prepare(config, self.device)
        self.dataset, self.model, self.method = prep.dataset, prep.model.to(self.device), prep.method
        self.eval_x, self.eval_y = prep.eval_x, prep.eval_y
        self.data_fingerprint = prep.data_fingerprint
        self.num_classes = self.dataset.num_classes
        self.epochs = config.resolved_epochs()
        self.schedule = config.resolved_schedule()
        self.base_lr = config.resolved_lr()
        self.batch_size = config.resolved_batch_size()
        from .data import BatchLoader

        self.local_batch_size = self.dist.local_batch_size(self.batch_size)  # batch_size is the total over ranks
        self.loader = BatchLoader(self.dataset.train_x, self.dataset.train_y, self.local_batch_size,
                                  device=self.device, shuffle=True, augment=config.augment, seed=config.seed,
                                  two_views=self.method.needs_two_views,
                                  drop_last=drop_last_batch(math.ceil(len(self.dataset.train_y) / self.dist.world_size),
                                                            self.local_batch_size, config.last_batch),
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"an epoch would have no training step: {len(self.dataset.train_y)} training images "
                              f"over {self.dist.world_size} process(es) at batch_size={self.batch_size}")
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        # What method.loss sees (atkit.fast): the model itself on the exact fp32 path, else a wrapper with bf16
        # autocast / channels_last / torch.compile / DDP. Checkpoints, evaluation and averages use self.model.
        # "auto" is per method: bf16 only where its parity with fp32 was measured (atkit.fast.training_precision).
        precision, why = training_precision(config.precision, self.device, config.method)
        self.precision_note = {"precision": precision, "requested": config.precision, "why": why}
        self.train_dtype = resolve_precision(precision, self.device)
        self.train_model = training_model(self.model, device=self.device, precision=precision,
                                          channels_last=config.channels_last, compile=config.compile,
                                          ddp=self.dist.wrap_ddp if self.dist.is_distributed else None)
        if self.dist.is_distributed:  # different attack random starts on each rank (restored on resume)
            seed_everything(self.dist.rank_seed(config.seed))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.base_lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov)
        self.ema: Optional[AveragedModel] = None
        if config.ema_decay is not None:
            # use_buffers=True averages BatchNorm statistics as well (docs/methods.md, baselines, WA/EMA).
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                     use_buffers=True)
        self.epoch = 0  # next epoch to run
        self.history: list[dict[str, Any]] = []  # complete epochs only
        self.partial_record: Optional[dict[str, Any]] = None  # an epoch cut short by request_stop
        self.best_metric = -math.inf
        self.best_epoch: Optional[int] = None
        self.status = "created"
        # TensorBoard scalars (atkit.tensorboard_log), opened at the first epoch; rank 0 only, like metrics.csv.
        self._tensorboard: Any = None
        self.tensorboard_enabled = bool(config.logging.get("tensorboard")) and self.dist.is_main
        if self.tensorboard_enabled:
            from .tensorboard_log import summary_writer_class

            summary_writer_class()  # a missing package is reported before any work
        if config.init_checkpoint is not None:
            self.init_from_checkpoint(config.init_checkpoint)
        self.epoch = config.start_epoch
        if self.epoch >= self.epochs:
            raise ConfigError(f"start_epoch={self.epoch} must be smaller than epochs={self.epochs}")
        self.method.setup(self)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def new(cls, config: RunConfig | dict | str | Path, **kwargs: Any) -> "Trainer":
        """Validate ``config``, create a fresh run folder and write ``config.yaml`` into it."""
        config = load_config(config) if not isinstance(config, RunConfig) else config
        config.validate()
        dist_ctx = init_from_env(config.device)
        run_dir = None
        if dist_ctx.is_main:  # under torchrun rank 0 creates the folder and tells the others
            run_dir = new_run_dir(config.out_dir, config.name or config.default_name())
            try:
                atomic_write_text(run_dir / "config.yaml", config.to_yaml())
            except OSError as e:
                raise ConfigError(f"cannot write {str(run_dir / 'config.yaml')!r}: {e.strerror or e} "
                                  "(choose a writable out_dir / --out-dir)") from e
        run_dir = dist_ctx.broadcast_object(run_dir)
        try:
            trainer = cls(config, run_dir, **kwargs)
        except BaseException:  # any error before training (bad data, a corrupt image, Ctrl-C): no stale run folder
            if dist_ctx.is_main:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return trainer

    @classmethod
    def resume(cls, run_dir: str | Path, **kwargs: Any) -> "Trainer":
        """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` (or from scratch if none yet)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a run folder (no config.yaml in it)")
        probe = FolderLock(run_dir)  # refuse a run another process writes in before loading anything
        if os.environ.get("RANK", "0") == "0" and probe.is_locked():  # under torchrun rank 0 speaks for all
            probe.acquire()  # raises RunInUseError naming the PID (fit() takes the lock for itself)
            probe.release()
        config = load_config(run_dir / "config.yaml")
        trainer = cls(config, run_dir, **kwargs)
        if trainer.dist.is_main:  # only rank 0 writes run files, so only it may clear their leftovers
            _remove_stale_temporaries(run_dir)
            _remove_stale_temporaries(trainer.ckpt_dir)
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            trainer.load_checkpoint(last)
            if trainer.dist.is_main:
                trainer._repair_best_checkpoint()
        return trainer

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": "atkit-checkpoint-1",
            "model_name": self.config.model,
            "num_classes": self.num_classes,
            "num_outputs": getattr(self.model, "num_outputs", None),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "averaged_model": self._averaged_state(),
            "method": self.method.state_dict(),
            "history": self.history,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "data_fingerprint": self.data_fingerprint,
        }

    def load_checkpoint(self, path: str | Path) -> None:
        state = require_atkit_checkpoint(load_checkpoint_file(path, self.device), path,
                                         keys=("model", "optimizer", "epoch", "history", "rng"))
        check_checkpoint_compatible(state, self.config.model, self.model, path)
        recorded = state.get("data_fingerprint")
        if recorded and recorded != self.data_fingerprint:
            # Resuming on other bytes would silently mix two datasets in one run.
            raise ConfigError(f"{str(path)!r} was trained on data with fingerprint {recorded}, but "
                              f"{self.config.dataset!r} with data={self.config.data} now gives "
                              f"{self.data_fingerprint}; the data changed since the run started, start a new run")
        load_weights(self.model, state["model"], f"checkpoint {str(path)!r}")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.method.load_state_dict(state.get("method") or {})
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        set_rng_state(state["rng"])
        ranks = state.get("rng_ranks")
        if self.dist.is_distributed and ranks and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])

    def init_from_checkpoint(self, path: str | Path) -> None:
        """Load only the weights (and weight average) of another run's checkpoint: a fine-tuning start.

        ``path`` is an atkit checkpoint or a plain state dict (wrappers as :func:`atkit.checkpoints.extract_state_dict`).
        """
        raw = load_checkpoint_file(path, self.device)
        if isinstance(raw, dict) and str(raw.get("format", "")).startswith("atkit-checkpoint"):
            state = dict(raw)
        else:  # someone else's weights
            state = {"model": extract_state_dict(raw, f"init_checkpoint {str(path)!r}")}
        adapt = getattr(self.method, "adapt_init_checkpoint", None)
        if adapt is not None:  # e.g. DUCAT grows a C-class head to its 2C head (DUCAT, Algorithm 1)
            state = adapt(state, self.model)
        check_checkpoint_compatible(state, self.config.model, self.model, path)
        load_weights(self.model, state["model"], f"init_checkpoint {str(path)!r}")
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

    def save_checkpoint(self, best: bool = False) -> None:
        state = self.checkpoint_state()
        if self.dist.is_distributed:  # every rank's RNG (exact resume); only rank 0 writes, the others wait
            state["rng_ranks"] = self.dist.all_gather_object(rng_state())
        if self.dist.is_main:
            _guarded(self.ckpt_dir / "last.pt", lambda: atomic_torch_save(state, self.ckpt_dir / "last.pt"))
            if best:
                self._save_best(state)
        self.dist.barrier()

    @staticmethod
    def _best_state(state: dict[str, Any]) -> dict[str, Any]:
        return {k: state[k] for k in ("format", "model_name", "num_classes", "num_outputs", "epoch", "model", "ema",
                                      "averaged_model", "config")} | {"best_metric": state["best_metric"]}

    def _save_best(self, state: dict[str, Any]) -> None:
        best = self._best_state(state)
        _guarded(self.ckpt_dir / "best.pt", lambda: atomic_torch_save(best, self.ckpt_dir / "best.pt"))

    def _repair_best_checkpoint(self) -> None:
        """A run killed between writing last.pt and best.pt of its best epoch: rebuild best.pt from last.pt."""
        if self.best_epoch is None or self.best_epoch != self.epoch:
            return
        path = self.ckpt_dir / "best.pt"
        if path.is_file():
            try:
                if load_checkpoint_file(path, "cpu").get("epoch") == self.epoch:
                    return
            except Exception:  # unreadable: rewrite it
                pass
        self._save_best(self.checkpoint_state())

    # -- metrics files -----------------------------------------------------------------------------
    def write_metrics(self, error: Optional[str] = None) -> None:
        if not self.dist.is_main:
            return
        history = self.history + ([self.partial_record] if self.partial_record is not None else [])
        payload = {"status": self.status, "run_dir": str(self.run_dir), "data_fingerprint": self.data_fingerprint,
                   "epochs": self.epochs, "epochs_done": len(self.history), "training_precision": self.precision_note,
                   "best_epoch": self.best_epoch, "best_metric": self.best_metric if self.best_epoch is not None
                   else None, "history": history}
        if error:
            payload["error"] = error
        _guarded(self.run_dir / "metrics.json", lambda: atomic_write_json(self.run_dir / "metrics.json", payload))
        if history:
            keys: list[str] = []
            for row in history:
                keys += [k for k in row if k not in keys]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
            _guarded(self.run_dir / "metrics.csv", lambda: atomic_write_text(self.run_dir / "metrics.csv",
                                                                            buf.getvalue()))

    def tensorboard(self) -> Any:
        """The run's :class:`~atkit.tensorboard_log.TensorBoardScalars` (None unless ``logging.tensorboard``).

        Opened on first use with ``purge_step`` = the last recorded epoch, which is written again: events a killed
        process wrote after its last checkpoint are hidden, and no epoch is missing."""
        if not self.tensorboard_enabled:
            return None
        if self._tensorboard is None:
            from .tensorboard_log import TensorBoardScalars

            last = self.history[-1] if self.history else None
            self._tensorboard = TensorBoardScalars(self.run_dir, purge_step=int(last["epoch"]) if last else None)
            if last is not None:
                self._tensorboard.log_epoch(last)
        return self._tensorboard

    def close_tensorboard(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    # -- training ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run to stop after the current step (thread-safe enough for a UI button)."""
        self._stop_requested = True

    def set_lr(self, epoch_float: float) -> float:
        lr = self.base_lr * self.schedule.multiplier(epoch_float)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        self.train_model.train()
        self.method.on_epoch_start(epoch)
        self.loader.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        correct_clean = torch.zeros((), device=self.device)
        correct_adv = torch.zeros((), device=self.device)
        n_clean = n_adv = n_seen = 0
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        ctx = StepContext(epoch=epoch, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                          track_clean=self.config.track_train_clean)
        bar = None
        if self.progress and self.dist.is_main:
            bar = progress_bar(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                               leave=False)
        start = time.time()
        lr = self.base_lr
        steps_done = 0
        for step, batch in enumerate(self.loader):
            if step >= self.steps_per_epoch or self._stop_requested:
                break
            ctx.step = step
            lr = self.set_lr(epoch + step / self.steps_per_epoch)
            out: LossOutput = self.method.loss(self.train_model, batch, ctx)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.method.after_step(self.model, ctx)
            # Bookkeeping stays on the device; the one host sync per epoch is below.
            finite = torch.isfinite(out.loss.detach())
            first_bad = torch.where((first_bad < 0) & ~finite, first_bad.new_full((), step), first_bad)
            for k, v in out.parts.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * batch.y.shape[0]
            sums["loss"] = sums.get("loss", 0.0) + out.loss.detach().float() * batch.y.shape[0]
            n_seen += batch.y.shape[0]
            if out.logits_clean is not None:
                correct_clean += (predict_labels(out.logits_clean.detach(), self.num_classes) == out.y).sum()
                n_clean += out.y.shape[0]
            if out.logits_adv is not None:
                correct_adv += (predict_labels(out.logits_adv.detach(), self.num_classes) == out.y).sum()
                n_adv += out.y.shape[0]
            steps_done += 1
            if bar is not None:
                bar.update(1)
            if step % 50 == 49 and int(self.dist.max(first_bad)) >= 0:
                break
        if bar is not None:
            bar.close()
        if self.dist.is_distributed:
            first_bad = self.dist.max(first_bad)
            sums, correct_clean, correct_adv, n_seen, n_clean, n_adv = self._sum_over_ranks(
                sums, correct_clean, correct_adv, n_seen, n_clean, n_adv)
            self._average_buffers_over_ranks()
        bad = int(first_bad)
        if bad >= 0:
            kept = self.epoch if (self.ckpt_dir / "last.pt").is_file() else None
            raise NonFiniteLossError(epoch, bad, kept)
        if steps_done == 0 and not self._stop_requested:
            raise RuntimeError(f"epoch {epoch + 1} ran no training step (the loader gave no batch); nothing was "
                               "learned, so the run is not finished")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "steps": steps_done}
        for k, v in sums.items():
            record[f"train_{k}"] = float(v) / max(n_seen, 1)
        record["train_clean_acc"] = 100.0 * float(correct_clean) / n_clean if n_clean else float("nan")
        record["train_adv_acc"] = 100.0 * float(correct_adv) / n_adv if n_adv else float("nan")
        record["train_time_s"] = time.time() - start
        return record

    def evaluate_epoch(self, model: nn.Module) -> dict[str, float]:
        """Clean and PGD accuracy on the fixed evaluation subset (in percent)."""
        from .evaluate import evaluate

        attacks = ["clean"] + ([f"pgd{self.config.eval.pgd_steps}"] if self.config.eval.pgd_steps > 0 else [])
        result = self.evaluate_sharded(model, self.eval_x, self.eval_y, attacks=attacks,
                                       threat=self.config.threat_model(), batch_size=self.config.eval.batch_size,
                                       device=self.device, num_classes=self.num_classes)
        return dict(result.accuracy)

    def evaluate_sharded(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> Any:
        """:func:`atkit.evaluate.evaluate` in the configured ``eval.precision`` (exact fp32 by default, TF32
        off); under torchrun each rank evaluates images ``r, r + W, ...`` and the results are gathered."""
        from .evaluate import evaluate

        view = eval_model(model, device=self.device, precision=self.config.eval.precision,
                          channels_last=resolve_channels_last(self.config.channels_last, self.device))
        xs, ys = self.dist.shard(x, y)
        with exact_fp32(resolve_precision(self.config.eval.precision, self.device) is None):
            result = evaluate(view, xs, ys, **kwargs)
        return self.dist.merge_eval(result, len(y))

    def _sum_over_ranks(self, sums: dict[str, Any], *counts: Any) -> tuple[Any, ...]:
        """The epoch's loss sums and accuracy counts summed over ranks (one collective)."""
        packed = {f"sum/{k}": v for k, v in sums.items()} | {f"count/{i}": c for i, c in enumerate(counts)}
        total = self.dist.sum(packed)
        return ({k: total[f"sum/{k}"] for k in sums},) + tuple(total[f"count/{i}"] for i in range(len(counts)))

    def _average_buffers_over_ranks(self) -> None:
        """BatchNorm statistics are per process during an epoch; average them so all ranks hold one model."""
        self.dist.average_buffers(self.model)
        if self.ema is not None:
            self.dist.average_buffers(self.ema)
        self.dist.average_buffers(self.averaged_model())

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs (from wherever the run is), then evaluate.

        Holds the run folder's lock throughout (:class:`atkit.utils.FolderLock`): a second process refuses to
        write here. Any exception marks the run ``failed`` with its message (Ctrl-C: ``interrupted``).
        """
        with self._holding_lock():
            return self._fit()

    @contextlib.contextmanager
    def _holding_lock(self) -> Iterator[None]:
        """Context: this process holds the run's lock (rank 0 only; re-entrant within this trainer)."""
        if not self.dist.is_main or self._lock.held:
            yield
            return
        _guarded(self._lock.path, self._lock.acquire)
        try:
            yield
        finally:
            self._lock.release()

    def _fit(self) -> dict[str, Any]:
        self.status = "running"
        self.partial_record = None
        self.write_metrics()
        tensorboard = self.tensorboard()  # a resumed run writes its last epoch again (see tensorboard())
        try:
            while self.epoch < self.epochs and not self._stop_requested:
                epoch = self.epoch
                with exact_fp32(self.train_dtype is None):  # the fp32 path is exact: no TF32 on GPUs
                    record = self.train_epoch(epoch)
                # Stopped mid-epoch: recorded (what it measured stays visible) but not counted as done.
                partial = self._stop_requested and record["steps"] < self.steps_per_epoch
                if partial:
                    record.update(partial=True, steps_per_epoch=self.steps_per_epoch)
                improved = False
                if (epoch + 1) % self.config.eval.every == 0 or epoch + 1 == self.epochs:
                    t0 = time.time()
                    acc = self.evaluate_epoch(self.model)
                    record.update({f"test_{k}_acc": v for k, v in acc.items()})
                    if self.ema is not None:
                        acc_ema = self.evaluate_epoch(self.ema.module)
                        record.update({f"ema_test_{k}_acc": v for k, v in acc_ema.items()})
                    averaged = self.averaged_model()
                    if averaged is not None:
                        acc_wa = self.evaluate_epoch(averaged)
                        record.update({f"wa_test_{k}_acc": v for k, v in acc_wa.items()})
                    record["eval_time_s"] = time.time() - t0
                    metric = self._selection_metric(record)
                    if metric > self.best_metric and not partial:
                        self.best_metric, self.best_epoch, improved = metric, epoch + 1, True
                record.update(self.method.epoch_metrics(self))
                if partial:
                    # last.pt stays at the last complete epoch: a resume repeats this epoch exactly, and the
                    # partial record (only in metrics.json, after the complete ones) is replaced by the full one.
                    self.partial_record = record
                    self.write_metrics()
                else:
                    self.history.append(record)
                    self.epoch = epoch + 1
                    self.save_checkpoint(best=improved)
                    self.write_metrics()
                    if tensorboard is not None:
                        tensorboard.log_epoch(record)
                if self.progress and self.dist.is_main:
                    print(epoch_line(record, self.epochs, len(self.eval_y)), file=default_stream(), flush=True)
                for cb in self.callbacks if self.dist.is_main else []:
                    cb(self, record)
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.write_metrics(error="interrupted by the user; resume with Trainer.resume or --resume")
            raise
        except Exception as e:  # whatever it was, the run is not running any more: say so, with the reason
            self.status = "failed"
            message = str(e) if isinstance(e, (NonFiniteLossError, OutputWriteError)) else f"{type(e).__name__}: {e}"
            try:  # the metrics file may be writable even when the checkpoint was not (e.g. a quota)
                self.write_metrics(error=message)
            except OutputWriteError:
                pass
            raise
        finally:
            if self.epoch < self.epochs and not self._stop_requested:  # left by an exception
                self.close_tensorboard()
        self.status = "stopped" if self._stop_requested and self.epoch < self.epochs else "finished"
        self.write_metrics()
        if self.status != "finished":  # a finished run keeps it open for final_evaluation's scalars
            self.close_tensorboard()
        return {"status": self.status, "best_epoch": self.best_epoch, "best_metric": self.best_metric,
                "history": self.history}

    def _selection_metric(self, record: dict[str, Any]) -> float:
        prefix = "wa_test_" if self.averaged_model() is not None else "ema_test_" if self.ema is not None else "test_"
        if self.config.eval.select_by == "clean" or self.config.eval.pgd_steps == 0:
            return record.get(f"{prefix}clean_acc", -math.inf)
        return record.get(f"{prefix}pgd{self.config.eval.pgd_steps}_acc", -math.inf)

    # -- final evaluation --------------------------------------------------------------------------
    def final_evaluation(self, attacks: Optional[list[str]] = None, n_test: Optional[int] = None, *,
                         progress: Optional[Phases] = None) -> dict[str, Any]:
        """Evaluate the final and the best model on the test set; writes ``eval.json`` into the run.

        Runs in ``eval.precision``: exact fp32 (TF32 off) unless asked otherwise. Under torchrun only rank 0
        evaluates (its sanity checks and AutoAttack state are whole-test-set); the other ranks return ``{}``.
        ``progress``: where each attack and sanity check reports (images done, ETA, result); default: text
        lines labelled "final evaluation" when the trainer was built with ``progress=True``.
        """
        if not self.dist.is_main:
            return {}
        phases = progress if progress is not None else Phases("final evaluation", show=self.progress)
        with self._holding_lock(), exact_fp32(resolve_precision(self.config.eval.precision, self.device) is None):
            return self._final_evaluation(attacks, n_test, phases)

    def _final_evaluation(self, attacks: Optional[list[str]] = None, n_test: Optional[int] = None,
                          phases: Optional[Phases] = None) -> dict[str, Any]:
        from .evaluate import evaluate

        phases = phases or Phases(show=False)

        attacks = list(attacks or self.config.eval.final_attacks)
        n = n_test or self.config.eval.final_n_test or len(self.dataset.test_y)
        x, y, indices = self.dataset.eval_subset(min(n, len(self.dataset.test_y)), split="test")
        x = to_float_images(x)
        threat = self.config.threat_model()
        results: dict[str, Any] = {}
        models = {"final": self.final_model()}
        best = self.best_model()
        # The last epoch was the best and no average is kept: one evaluation serves both (same weights, same numbers).
        best_is_final = best is not None and _same_weights(best, models["final"])
        if best is not None and not best_is_final:
            models["best"] = best
        # Gradient-masking checks (atkit.sanity) beside any robust number; a clean-only evaluation has none to check.
        sanity = ({"n": self.config.eval.sanity_n_test}
                  if self.config.eval.sanity and any(a not in ("clean", "random") for a in attacks) else None)
        phases.note(f"{' and '.join(models)} model{'s' if len(models) > 1 else ''}"
                    f"{' (= the best checkpoint)' if best_is_final else ''}, {', '.join(attacks)} on "
                    f"{len(y)} test images" + (f", then sanity checks on {min(sanity['n'] or len(y), len(y))}"
                                               if sanity is not None else "; no sanity checks (eval.sanity: false)"),
                    sep=": ")
        for label, model in models.items():
            shown = phases.child(f"[{label}]")
            model = eval_model(model, device=self.device, precision=self.config.eval.precision,
                               channels_last=resolve_channels_last(self.config.channels_last, self.device))
            kwargs = dict(attacks=attacks, threat=threat, batch_size=self.config.eval.batch_size, device=self.device,
                          num_classes=self.num_classes, progress=shown)
            if getattr(model, "dummy_classes", False):
                # A dummy-class model is reported by the per-sample worst case over the DUCAT protocols: the
                # published protocol alone over-reports. Every protocol's numbers stay under "protocols".
                from .evaluate import dummy_protocols_record, evaluate_dummy_protocols

                by_protocol = evaluate_dummy_protocols(model, x, y, aa_state_dir=self.run_dir / "aa_state" / label,
                                                       sanity=sanity or False, **kwargs)
                results[label] = dummy_protocols_record(by_protocol)
            else:
                res = evaluate(model, x, y, aa_state_dir=self.run_dir / "aa_state" / label, sanity=sanity or False,
                               **kwargs)
                results[label] = res.to_dict()
        results["best_epoch"] = self.best_epoch
        results["images"] = test_images_record(self.dataset, indices, self.data_fingerprint)
        from .provenance import attach_provenance, checkpoint_record

        if best_is_final:  # one evaluation, recorded under both names; each name gets its own checkpoint record
            results["best"] = dict(copy.deepcopy(results["final"]), same_weights_as="final")
        for label in [name for name in ("final", "best") if name in results]:  # last.pt holds final, best.pt best
            path = self.ckpt_dir / ("best.pt" if label == "best" else "last.pt")
            attach_provenance(results[label], images=results["images"],
                              checkpoint=checkpoint_record(path) if path.is_file() else None,
                              model={"name": self.config.model, "params": dict(self.config.model_params),
                                     "num_classes": self.num_classes,
                                     "dummy_classes": bool(getattr(self.model, "dummy_classes", False)),
                                     "weights": label, "source": "atkit run"})
        _guarded(self.run_dir / "eval.json", lambda: atomic_write_json(self.run_dir / "eval.json", results))
        tensorboard = self.tensorboard()
        if tensorboard is not None:
            tensorboard.log_eval(results, step=self.epoch)
            self.close_tensorboard()
        return results

    def final_model(self) -> nn.Module:
        """The model reported as "final": the weight average when one is kept, else the online model."""
        averaged = self.averaged_model()
        if averaged is not None:
            return averaged
        return self.ema.module if self.ema is not None else self.model

    def averaged_model(self) -> Optional[nn.Module]:
        """The weight average a method keeps itself (ReBAT, RPAT++: ``method.averaged_model()``), if any.

        It is evaluated each epoch as ``wa_test_*``, selects "best" and is the final model.
        """
        get = getattr(self.method, "averaged_model", None)
        model = get() if callable(get) else None
        return model if isinstance(model, nn.Module) else None

    def _averaged_state(self) -> Optional[dict[str, Any]]:
        averaged = self.averaged_model()
        return averaged.state_dict() if averaged is not None else None

    def best_model(self) -> Optional[nn.Module]:
        path = self.ckpt_dir / "best.pt"
        if not path.is_file():
            return None
        state = load_checkpoint_file(path, self.device)
        model = copy.deepcopy(self.model)
        if state.get("averaged_model") is not None:
            model.load_state_dict(state["averaged_model"])
            return model
        if self.ema is not None and state.get("ema") is not None:
            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema_decay), use_buffers=True)
            ema.load_state_dict(state["ema"])
            return ema.module
        model.load_state_dict(state["model"])
        return model


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold identical parameters and buffers (names, shapes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].to(sb[k].device), sb[k])
                                          for k in sa)


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


def train(config: RunConfig | dict | str | Path, *, resume: str | Path | None = None, evaluate_final: bool = True,
          **kwargs: Any) -> Trainer:
    """Run (or resume) a training run to the end and, by default, its final evaluation.

    Resuming a run that trained all its epochs trains nothing and keeps its ``eval.json`` when that holds every
    attack of ``eval.final_attacks``; ``trainer.already_finished`` is then true.
    """
    trainer = Trainer.resume(resume, **kwargs) if resume is not None else Trainer.new(config, **kwargs)
    trainer.already_finished = False
    if resume is not None and trainer.epoch >= trainer.epochs:
        trainer.already_finished = True
        trainer.status = "finished"
        with trainer._holding_lock():
            if _recorded_status(trainer.run_dir) != "finished":  # killed between its last checkpoint and "finished"
                trainer.write_metrics()
            if evaluate_final and not has_final_evaluation(trainer.run_dir, trainer.config.eval.final_attacks):
                trainer.final_evaluation()
        return trainer
    trainer.fit()
    if evaluate_final and trainer.status == "finished":
        trainer.final_evaluation()
    return trainer


def _recorded_status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def has_final_evaluation(run_dir: str | Path, attacks: list[str]) -> bool:
    """Whether ``run_dir/eval.json`` holds every attack of ``attacks`` for the final model."""
    try:
        final = json.loads((Path(run_dir) / "eval.json").read_text()).get("final") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return set(attacks) <= set(final.get("accuracy") or {})


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


def load_model(path: str | Path, device: str | torch.device = "cpu", which: str = "model") -> nn.Module:
    """Rebuild the model stored in a checkpoint (``last.pt`` or ``best.pt``), or in a run folder's best/last."""
    from .models import build_model

    path = resolve_checkpoint(path)
    state = require_atkit_checkpoint(load_checkpoint_file(path, device), path, keys=("model", "config", "num_classes"))
    config = RunConfig.from_dict(state["config"])
    method_cls_needs_dummy = config.build_method().needs_dummy_classes
    params = dict(config.model_params)
    if method_cls_needs_dummy:
        params["dummy_classes"] = True
    model = build_model(config.model, num_classes=state["num_classes"], **params)
    if which == "ema" and state.get("ema") is None and state.get("averaged_model") is not None:
        model.load_state_dict(state["averaged_model"])  # a method's own weight average (ReBAT, RPAT++)
    elif which == "ema" and state.get("ema") is not None:
        ema = AveragedModel(model, use_buffers=True)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        load_weights(model, state["model"], f"checkpoint {str(path)!r}")
    return model.to(device).eval()

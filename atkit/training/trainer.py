"""The trainer: one loop for every method, run directories and exact resume.

A run lives in its own folder under ``outputs/runs/`` (never shared with another run)::

    config.yaml      the resolved configuration
    metrics.csv      one row per epoch (loss parts, train/test clean and robust accuracy, lr, time)
    metrics.json     the same rows plus the run's status ("running", "finished", "failed", "stopped") and warnings
    checkpoints/last.pt   everything needed to resume (weights, optimiser, averages, RNG states)
    checkpoints/best.pt   weights of the epoch with the best selection metric
    eval.json        final evaluation of the best and final models

Every file is written atomically (temporary file + rename), so a run killed at any moment resumes
from its last complete epoch. The trainer keeps the run's state in an explicit :class:`~atkit.training.state.RunState`,
which is all the checkpoints (:mod:`atkit.training.checkpoints`: their content, saving, loading, the repair of
``best.pt``, :func:`~atkit.training.checkpoints.load_model`) and the final report (``eval.json``,
:mod:`atkit.training.report`) see. Building the data, model and method is :mod:`atkit.training.setup`; an
epoch's tally and log line :mod:`atkit.training.epoch`; which earlier run to reuse or resume
:mod:`atkit.training.runs`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..core.fast import precision_scope, resolve_precision, training_model, training_precision
from ..core.processes import sigterm_as_interrupt
from ..core.progress import Phases, default_stream, progress_bar
from ..core.threads import apply_threads
from ..core.utils import (ConfigError, FolderLock, OutputWriteError, atomic_write_json, atomic_write_text,
                          guarded_write, remove_stale_temporaries, seed_everything)
from ..data import BatchLoader
from ..evaluation import evaluate
from ..methods import StepContext
from .accumulate import accumulate_gradients, check_accumulation
from .augment import build_cutmix
from .catastrophic_overfitting import flag_epoch, run_warnings
from .checkpoints import (best_model, init_weights_from_checkpoint, repair_best_checkpoint, restore_checkpoint,
                          save_checkpoint)
from .config import RunConfig, drop_last_batch, load_config
from .distributed import init_from_env
from .epoch import EpochTally, NonFiniteLossError, epoch_line
from .report import final_report, has_final_evaluation
from .setup import Prepared, new_run_dir, prepare
from .state import RunState

#: Called after every optimiser step as ``callback(trainer, steps_done)``, ``steps_done`` counting from the run's
#: start (``epoch * steps_per_epoch + step + 1``); it may call ``trainer.request_stop()``.
StepCallback = Callable[["Trainer", int], None]


def _state_field(name: str) -> property:
    """A trainer attribute that is a field of its :class:`RunState` (read and written through it)."""
    return property(lambda self: getattr(self.state, name), lambda self, value: setattr(self.state, name, value),
                    doc=f"``trainer.state.{name}`` (:class:`atkit.training.state.RunState`).")


class Trainer:
    """Trains ``config.method`` on ``config.dataset`` with SGD and the configured schedule.

    Use :meth:`Trainer.new` for a fresh run and :meth:`Trainer.resume` to continue one from its last
    checkpoint. ``callbacks`` are called as ``cb(trainer, record)`` after each epoch (live plots in
    notebooks), ``on_step`` callbacks (:data:`StepCallback`, also ``trainer.step_callbacks``) as
    ``cb(trainer, steps_done)`` after every optimiser step (progress bars; one may call :meth:`request_stop`);
    both on rank 0 only under torchrun. ``progress``: a bar over each epoch's steps, one :func:`epoch_line` per
    epoch and the final evaluation attack by attack (text under papermill, :mod:`atkit.core.progress`).
    :meth:`request_stop` ends the run cleanly after the current step, keeping what was measured; an epoch cut
    short is recorded with ``partial: true`` and not counted as done (resume repeats it from the last complete
    epoch's checkpoint).
    """

    model = _state_field("model")
    optimizer = _state_field("optimizer")
    method = _state_field("method")
    ema = _state_field("ema")
    num_classes = _state_field("num_classes")
    data_fingerprint = _state_field("data_fingerprint")
    epoch = _state_field("epoch")  # the next epoch to run (complete epochs so far)
    history = _state_field("history")  # complete epochs only
    best_metric = _state_field("best_metric")
    best_epoch = _state_field("best_epoch")

    def __init__(self, config: RunConfig, run_dir: Path, *, callbacks: Optional[list[Callable]] = None,
                 on_step: StepCallback | list[StepCallback] | None = None, progress: bool = True,
                 prepared: Optional[Prepared] = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        # Held while this process writes the run (fit, final evaluation): no second writer, even in another process.
        self._lock = FolderLock(self.run_dir)
        self.callbacks = list(callbacks or [])
        self.step_callbacks: list[StepCallback] = [on_step] if callable(on_step) else list(on_step or [])
        self.progress = progress
        # One process unless launched by torchrun; then cuda:LOCAL_RANK and a process group (atkit.training.distributed).
        self.dist = init_from_env(config.device)
        self.device = self.dist.device
        self._stop_requested = False
        self.threads_note = apply_threads(config.threads).to_dict()  # before any work (atkit.core.threads)
        seed_everything(config.seed)
        prep = prepared or prepare(config, self.device)
        self.dataset, model, method = prep.dataset, prep.model.to(self.device), prep.method
        self.eval_x, self.eval_y = prep.eval_x, prep.eval_y
        self.epochs = config.resolved_epochs()
        self.schedule = config.resolved_schedule()
        self.base_lr = config.resolved_lr()
        self.batch_size = config.resolved_batch_size()
        self.local_batch_size = self.dist.local_batch_size(self.batch_size)  # batch_size is the total over ranks
        self.loader = BatchLoader(self.dataset.train_x, self.dataset.train_y, self.local_batch_size,
                                  device=self.device, shuffle=True, augment=config.augment, seed=config.seed,
                                  two_views=method.needs_two_views,
                                  drop_last=drop_last_batch(math.ceil(len(self.dataset.train_y) / self.dist.world_size),
                                                            self.local_batch_size, config.last_batch),
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = len(self.loader)
        check_accumulation(self.local_batch_size, config.accumulate_steps)
        self.cutmix = build_cutmix(config, self.dataset.num_classes, rank=self.dist.rank)  # None: off
        if self.steps_per_epoch == 0:
            raise ConfigError(f"an epoch would have no training step: {len(self.dataset.train_y)} training images "
                              f"over {self.dist.world_size} process(es) at batch_size={self.batch_size}")
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        # What method.loss sees (atkit.core.fast): the model itself on the exact fp32 path, else a wrapper with bf16
        # autocast / channels_last / torch.compile / DDP. Checkpoints, evaluation and averages use self.model.
        # "auto" is per method: bf16 only where its parity with fp32 was measured (atkit.core.fast.training_precision).
        precision, why = training_precision(config.precision, self.device, config.method)
        self.precision_note = {"precision": precision, "requested": config.precision, "why": why}
        self.train_dtype = resolve_precision(precision, self.device)
        self.train_model = training_model(model, device=self.device, precision=precision,
                                          channels_last=config.channels_last, compile=config.compile,
                                          ddp=self.dist.wrap_ddp if self.dist.is_distributed else None)
        if self.dist.is_distributed:  # different attack random starts on each rank (restored on resume)
            seed_everything(self.dist.rank_seed(config.seed))
        optimizer = torch.optim.SGD(model.parameters(), lr=self.base_lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
        ema: Optional[AveragedModel] = None
        if config.ema_decay is not None:
            # use_buffers=True averages BatchNorm statistics as well (docs/methods.md, baselines, WA/EMA).
            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        # What checkpoints save and restore and the final report evaluates; epoch 0 is the next to run.
        self.state = RunState(config=config, run_dir=self.run_dir, device=self.device, model=model, optimizer=optimizer,
                              method=method, num_classes=self.dataset.num_classes,
                              data_fingerprint=prep.data_fingerprint, ema=ema)
        self.partial_record: Optional[dict[str, Any]] = None  # an epoch cut short by request_stop
        self.status = "created"
        # TensorBoard scalars (atkit.training.tensorboard_log), opened at the first epoch; rank 0 only, like metrics.csv.
        self._tensorboard: Any = None
        self.tensorboard_enabled = bool(config.logging.get("tensorboard")) and self.dist.is_main
        if self.tensorboard_enabled:
            from .tensorboard_log import summary_writer_class  # why: defers tensorboard (heavy) to runs that log

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
            remove_stale_temporaries(run_dir)
            remove_stale_temporaries(trainer.ckpt_dir)
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            trainer.load_checkpoint(last)
            if trainer.dist.is_main:
                repair_best_checkpoint(trainer.state)
        return trainer

    # -- checkpoints (atkit.training.checkpoints, on the run's state) ------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.state.ckpt_dir

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from a ``last.pt`` (:func:`atkit.training.checkpoints.restore_checkpoint`)."""
        restore_checkpoint(self.state, path, self.dist)

    def init_from_checkpoint(self, path: str | Path) -> None:
        """Start from another run's weights (:func:`atkit.training.checkpoints.init_weights_from_checkpoint`)."""
        init_weights_from_checkpoint(self.state, path)

    def save_checkpoint(self, best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``) atomically (:func:`atkit.training.checkpoints.save_checkpoint`)."""
        save_checkpoint(self.state, self.dist, best)

    def best_model(self) -> Optional[nn.Module]:
        """The model of ``best.pt``, or None (:func:`atkit.training.checkpoints.best_model`)."""
        return best_model(self.state)

    # -- metrics files -----------------------------------------------------------------------------
    def write_metrics(self, error: Optional[str] = None) -> None:
        if not self.dist.is_main:
            return
        history = self.history + ([self.partial_record] if self.partial_record is not None else [])
        payload = {"status": self.status, "run_dir": str(self.run_dir), "data_fingerprint": self.data_fingerprint,
                   "epochs": self.epochs, "epochs_done": len(self.history), "training_precision": self.precision_note,
                   "threads": self.threads_note, "best_epoch": self.best_epoch,
                   "best_metric": self.best_metric if self.best_epoch is not None else None,
                   "warnings": run_warnings(history), "history": history}
        if error:
            payload["error"] = error
        guarded_write(self.run_dir / "metrics.json", lambda: atomic_write_json(self.run_dir / "metrics.json", payload))
        if history:
            keys: list[str] = []
            for row in history:
                keys += [k for k in row if k not in keys]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
            guarded_write(self.run_dir / "metrics.csv", lambda: atomic_write_text(self.run_dir / "metrics.csv",
                                                                            buf.getvalue()))

    def tensorboard(self) -> Any:
        """The run's :class:`~atkit.training.tensorboard_log.TensorBoardScalars` (None unless ``logging.tensorboard``).

        Opened on first use with ``purge_step`` = the last recorded epoch, which is written again: events a killed
        process wrote after its last checkpoint are hidden, and no epoch is missing."""
        if not self.tensorboard_enabled:
            return None
        if self._tensorboard is None:
            from .tensorboard_log import TensorBoardScalars  # why: defers tensorboard (heavy) to runs that log

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
        """One epoch of ``method.loss`` and SGD steps (``steps_per_epoch``, fewer after :meth:`request_stop`);
        returns its record (``epoch`` counts from 1, ``lr``, ``steps``, ``train_*``). A non-finite loss raises
        :class:`NonFiniteLossError` (checked every 50 steps and at the end, the epoch's only host syncs)."""
        self.train_model.train()
        self.method.on_epoch_start(epoch)
        self.loader.set_epoch(epoch)
        tally = EpochTally(self.device, self.num_classes)
        ctx = StepContext(epoch=epoch, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                          track_clean=self.config.track_train_clean, label_smoothing=self.config.label_smoothing)
        step_callbacks = self.step_callbacks if self.dist.is_main else []
        bar = (progress_bar(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                            leave=False) if self.progress and self.dist.is_main else None)
        start, lr, steps_done = time.time(), self.base_lr, 0
        for step, batch in enumerate(self.loader):
            if step >= self.steps_per_epoch or self._stop_requested:
                break
            ctx.step = step
            lr = self.set_lr(epoch + step / self.steps_per_epoch)
            if self.cutmix is not None:
                batch = self.cutmix(batch, epoch, step)
            # One micro-batch (the whole batch) unless accumulate_steps > 1 (atkit.training.accumulate).
            for out, rows in accumulate_gradients(self.method, self.train_model, batch, ctx,
                                                  self.config.accumulate_steps,
                                                  lambda: self.optimizer.zero_grad(set_to_none=True)):
                tally.add(out, rows, step)
            self.optimizer.step()
            # why: after_step may restore weights perturbed for the update (AWP), so the EMA averages it after.
            self.method.after_step(self.model, ctx)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            steps_done += 1
            if bar is not None:
                bar.update(1)
            for callback in step_callbacks:
                callback(self, epoch * self.steps_per_epoch + step + 1)
            if step % 50 == 49 and int(self.dist.max(tally.first_bad)) >= 0:
                break
        if bar is not None:
            bar.close()
        if self.dist.is_distributed:
            tally.sum_over_ranks(self.dist)
            self._average_buffers_over_ranks()
        if int(tally.first_bad) >= 0:
            raise NonFiniteLossError(epoch, int(tally.first_bad),
                                     self.epoch if (self.ckpt_dir / "last.pt").is_file() else None)
        if steps_done == 0 and not self._stop_requested:
            raise RuntimeError(f"epoch {epoch + 1} ran no training step (the loader gave no batch); nothing was "
                               "learned, so the run is not finished")
        return {"epoch": epoch + 1, "lr": lr, "steps": steps_done, **tally.train_metrics(),
                "train_time_s": time.time() - start}

    def evaluate_epoch(self, model: nn.Module) -> dict[str, float]:
        """Clean and PGD accuracy on the fixed evaluation subset (in percent). A dummy-class model is checked under
        the published protocol only (the papers' per-epoch selection; its final report takes every protocol)."""
        attacks = ["clean"] + ([f"pgd{self.config.eval.pgd_steps}"] if self.config.eval.pgd_steps > 0 else [])
        protocol = "published" if getattr(model, "dummy_classes", False) else None
        if self.method.single_step and self.config.eval.pgd_steps > 0:  # catastrophic overfitting needs FGSM beside PGD
            attacks.append("fgsm")
        result = self.evaluate_sharded(model, self.eval_x, self.eval_y, attacks=attacks, protocol=protocol)
        return dict(result.accuracy)

    def evaluate_sharded(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> Any:
        """:func:`atkit.evaluation.evaluate` with the run's threat model, ``eval.batch_size``, ``eval.precision``
        (exact fp32 by default), device and class count; under torchrun each rank evaluates images ``r, r + W, ...``
        and the results are gathered."""
        options = dict(threat=self.config.threat_model(), batch_size=self.config.eval.batch_size, device=self.device,
                       num_classes=self.num_classes, precision=self.config.eval.precision)
        options.update(kwargs)
        xs, ys = self.dist.shard(x, y)
        return self.dist.merge_eval(evaluate(model, xs, ys, **options), len(y))

    def _average_buffers_over_ranks(self) -> None:
        """BatchNorm statistics are per process during an epoch; average them so all ranks hold one model."""
        self.dist.average_buffers(self.model)
        if self.ema is not None:
            self.dist.average_buffers(self.ema)
        self.dist.average_buffers(self.averaged_model())

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs (from wherever the run is), then evaluate.

        Holds the run folder's lock throughout (:class:`atkit.core.utils.FolderLock`): a second process refuses to
        write here. Any exception marks the run ``failed`` with its message (Ctrl-C, and SIGTERM, which ``kill``
        and SLURM send: ``interrupted``; :func:`atkit.core.processes.sigterm_as_interrupt`).
        """
        with self._holding_lock(), sigterm_as_interrupt():
            return self._fit()

    @contextlib.contextmanager
    def _holding_lock(self) -> Iterator[None]:
        """Context: this process holds the run's lock (rank 0 only; re-entrant within this trainer)."""
        if not self.dist.is_main or self._lock.held:
            yield
            return
        guarded_write(self._lock.path, self._lock.acquire)
        try:
            yield
        finally:
            self._lock.release()

    def _fit(self) -> dict[str, Any]:
        self.status, self.partial_record = "running", None
        self.write_metrics()
        tensorboard = self.tensorboard()  # a resumed run writes its last epoch again (see tensorboard())
        try:
            while self.epoch < self.epochs and not self._stop_requested:
                epoch = self.epoch
                with precision_scope(self.precision_note["precision"], self.device):  # fp32 is exact: TF32 off
                    record = self.train_epoch(epoch)
                # Stopped mid-epoch: recorded (what it measured stays visible) but not counted as done.
                partial = self._stop_requested and record["steps"] < self.steps_per_epoch
                if partial:
                    record.update(partial=True, steps_per_epoch=self.steps_per_epoch)
                improved = self._evaluate_and_select(record, partial)
                if self.method.single_step and self.config.eval.pgd_steps > 0:  # atkit.training.catastrophic_overfitting
                    flag_epoch(record, self.history, f"test_pgd{self.config.eval.pgd_steps}_acc")
                record.update(self.method.epoch_metrics(self))
                self._keep_epoch(record, partial, improved, tensorboard)
        except KeyboardInterrupt as e:
            self.status = "interrupted"
            how = "stopped by SIGTERM" if getattr(e, "signum", None) == signal.SIGTERM else "interrupted by the user"
            self.write_metrics(error=f"{how}; resume with Trainer.resume or --resume")
            e.run_dir = self.run_dir  # type: ignore[attr-defined]  # for the command line's one-line message
            raise
        except Exception as e:
            self._mark_failed(e)
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

    def _evaluate_and_select(self, record: dict[str, Any], partial: bool) -> bool:
        """On evaluation epochs (every ``eval.every`` and the last): the selection images' accuracies of the
        online model, the EMA and the method's weight average into ``record``; whether this epoch is the new best."""
        epoch = record["epoch"]
        if epoch % self.config.eval.every != 0 and epoch != self.epochs:
            return False
        t0 = time.time()
        models = {"test_": self.model, "ema_test_": self.ema.module if self.ema is not None else None,
                  "wa_test_": self.averaged_model()}
        for prefix, model in models.items():
            if model is not None:
                record.update({f"{prefix}{k}_acc": v for k, v in self.evaluate_epoch(model).items()})
        record["eval_time_s"] = time.time() - t0
        metric = self._selection_metric(record)
        if metric > self.best_metric and not partial:
            self.best_metric, self.best_epoch = metric, epoch
            return True
        return False

    def _keep_epoch(self, record: dict[str, Any], partial: bool, improved: bool, tensorboard: Any) -> None:
        """Record the epoch: a complete one in the history, ``last.pt`` (and ``best.pt``) and the metrics files;
        a partial one only in ``metrics.json``. Then the epoch line and the epoch callbacks."""
        if partial:
            # last.pt stays at the last complete epoch: a resume repeats this epoch exactly, and the
            # partial record (only in metrics.json, after the complete ones) is replaced by the full one.
            self.partial_record = record
            self.write_metrics()
        else:
            self.history.append(record)
            self.epoch = record["epoch"]
            self.save_checkpoint(best=improved)
            self.write_metrics()
            if tensorboard is not None:
                tensorboard.log_epoch(record)
        if self.progress and self.dist.is_main:
            print(epoch_line(record, self.epochs, len(self.eval_y)), file=default_stream(), flush=True)
        for cb in self.callbacks if self.dist.is_main else []:
            cb(self, record)

    def _mark_failed(self, error: Exception) -> None:
        """Whatever it was, the run is not running any more: say so in ``metrics.json``, with the reason."""
        self.status = "failed"
        message = str(error) if isinstance(error, (NonFiniteLossError, OutputWriteError)) else (
            f"{type(error).__name__}: {error}")
        try:  # the metrics file may be writable even when the checkpoint was not (e.g. a quota)
            self.write_metrics(error=message)
        except OutputWriteError:
            pass

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
        with self._holding_lock():  # the evaluation sets its own precision (eval.precision; exact fp32 by default)
            results = final_report(self.state, self.dataset, attacks, n_test, phases)
        tensorboard = self.tensorboard()
        if tensorboard is not None:
            tensorboard.log_eval(results, step=self.epoch)
            self.close_tensorboard()
        return results

    def final_model(self) -> nn.Module:
        """The model reported as "final" (:meth:`atkit.training.state.RunState.final_model`)."""
        return self.state.final_model()

    def averaged_model(self) -> Optional[nn.Module]:
        """The method's own weight average, if any (:meth:`atkit.training.state.RunState.averaged_model`)."""
        return self.state.averaged_model()


def train(config: RunConfig | dict | str | Path, *, resume: str | Path | None = None, evaluate_final: bool = True,
          **kwargs: Any) -> Trainer:
    """Run (or resume) a training run to the end and, by default, its final evaluation (:func:`train_to_end`)."""
    trainer = Trainer.resume(resume, **kwargs) if resume is not None else Trainer.new(config, **kwargs)
    return train_to_end(trainer, evaluate_final=evaluate_final)


def train_to_end(trainer: Trainer, *, evaluate_final: bool = True) -> Trainer:
    """Train ``trainer`` to its last epoch and, when it finished and ``evaluate_final``, run the final evaluation.

    A trainer that already trained all its epochs (a resumed finished run) trains nothing, repairs a status that a
    kill left at "running", and keeps its ``eval.json`` when that holds every attack of ``eval.final_attacks``;
    ``trainer.already_finished`` is then true.
    """
    trainer.already_finished = trainer.epoch >= trainer.epochs
    if trainer.already_finished:
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


__all__ = ["StepCallback", "Trainer", "train", "train_to_end"]

"""Optional TensorBoard scalars beside ``metrics.csv`` (``logging: {tensorboard: true}`` in a run config).

The trainer writes, into ``<run>/tensorboard/``, one scalar per numeric column of ``metrics.csv`` at
``global_step = epoch`` (tags are the column names: ``train_loss``, ``train_ce``, ``test_pgd20_acc``, ``lr``,
``train_time_s``, ...) and the final evaluation as ``eval/<final|best>/<attack>_acc``, ``eval/<..>/mean`` and
``eval/<..>/nrr`` at the last epoch. ``metrics.csv``/``metrics.json``/``eval.json`` stay the source of truth;
the event files are a view for ``tensorboard --logdir outputs/runs``.

A resumed run opens its writer with ``purge_step`` = the last finished epoch and writes that epoch again, so
whatever a killed process logged after its last checkpoint is hidden and no epoch is missing or doubled.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional

from ..core.utils import ConfigError, unknown_name_error

LOGGING_KEYS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"
MISSING_MESSAGE = ("logging.tensorboard=true needs the tensorboard package: pip install atkit[tensorboard] "
                   "(or set logging.tensorboard=false)")


def check_logging_options(logging: Any) -> None:
    """Refuse a ``logging`` mapping with unknown keys or a non-boolean ``tensorboard``."""

    if not isinstance(logging, Mapping):
        raise ConfigError(f"config key 'logging' must be a mapping such as {{tensorboard: true}}, got {logging!r}")
    for key, value in logging.items():
        if key not in LOGGING_KEYS:
            raise unknown_name_error("logging key", key, LOGGING_KEYS)
        if not isinstance(value, bool):
            raise ConfigError(f"logging.{key}={value!r} must be true or false")


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line :class:`ConfigError` naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra, imported only when a run logs
    except ImportError:
        raise ConfigError(MISSING_MESSAGE) from None
    return SummaryWriter


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class TensorBoardScalars:
    """The per-epoch records and the final evaluation of one run as TensorBoard scalars."""

    def __init__(self, run_dir: str | Path, purge_step: Optional[int] = None) -> None:
        writer_class = summary_writer_class()
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = writer_class(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Every numeric entry of one ``metrics.csv`` row, at ``global_step = record["epoch"]``."""
        step = int(record["epoch"])
        for key, value in record.items():
            number = _number(value)
            if key != "epoch" and number is not None:
                self.writer.add_scalar(key, number, global_step=step)
        self.writer.flush()

    def log_eval(self, results: Mapping[str, Any], step: int) -> None:
        """Accuracies (percent), Mean and NRR of the ``final`` and ``best`` models of ``eval.json``."""
        for label in ("final", "best"):
            res = results.get(label)
            if not isinstance(res, Mapping):
                continue
            for attack, acc in (res.get("accuracy") or {}).items():
                if _number(acc) is not None:
                    self.writer.add_scalar(f"eval/{label}/{attack}_acc", float(acc), global_step=step)
            for key in ("mean", "nrr"):
                value = _number(res.get(key))
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"eval/{label}/{key}", value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["LOGGING_KEYS", "MISSING_MESSAGE", "TENSORBOARD_DIR", "TensorBoardScalars", "check_logging_options",
           "summary_writer_class"]

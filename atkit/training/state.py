"""The state of a training run: what its checkpoints save and restore and what its final report evaluates.

:class:`RunState` is an explicit object handed to :mod:`atkit.training.checkpoints` and
:mod:`atkit.training.report` (they never see the trainer): the config, the model with its optimiser, the method
(with any weight average it keeps), the EMA, and the progress counters (``epoch``, ``history``, ``best_metric``,
``best_epoch``) that an exact resume needs. :class:`atkit.training.trainer.Trainer` holds one and reads and
writes these fields through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel

from ..methods import Method
from .config import RunConfig


@dataclass
class RunState:
    """One run's state. ``epoch`` is the next epoch to run (completed epochs so far); ``history`` holds one record
    per complete epoch; ``best_metric`` / ``best_epoch`` are the selection metric's best value and its epoch."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    method: Method
    num_classes: int
    data_fingerprint: Optional[str]
    ema: Optional[AveragedModel] = None
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float = -math.inf
    best_epoch: Optional[int] = None

    @property
    def ckpt_dir(self) -> Path:
        """``<run>/checkpoints``: ``last.pt`` (everything a resume needs) and ``best.pt`` (the best epoch's weights)."""
        return self.run_dir / "checkpoints"

    def averaged_model(self) -> Optional[nn.Module]:
        """The weight average a method keeps itself (ReBAT, RPAT++: ``method.averaged_model()``), if any.

        It is evaluated each epoch as ``wa_test_*``, selects "best" and is the final model.
        """
        get = getattr(self.method, "averaged_model", None)
        model = get() if callable(get) else None
        return model if isinstance(model, nn.Module) else None

    def final_model(self) -> nn.Module:
        """The model reported as "final": the method's weight average when it keeps one, else the EMA when the run
        keeps one, else the online model."""
        averaged = self.averaged_model()
        if averaged is not None:
            return averaged
        return self.ema.module if self.ema is not None else self.model


__all__ = ["RunState"]

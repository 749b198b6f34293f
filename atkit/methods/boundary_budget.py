"""Boundary-budget training: PGD-AT with separate perturbation budgets for boundary and non-boundary samples.

The training variants behind the boundary-sample motivation of the robust-alignment paper (RAAT,
Fig. 2 as its appendix C.1 describes it, and Fig. 5b; docs/experiments.md, boundary_samples). At every step the
clean-correct samples of the batch are split by ``eta`` into *boundary* samples (the reduced
adversarial ``x''`` is already misclassified, :func:`atkit.methods.raat.boundary_mask`) and
*non-boundary* samples, with the current model as a fixed indicator (eval mode, no gradient), as
RAAT does. Each group is then trained on ``CE(z(x + s_g * delta_g), y)`` with its own budget scale
``s_g`` in [0, 1]:

* ``budget_mode="scale"`` (default): ``delta_g = x' - x``, the full PGD perturbation scaled by
  ``s_g`` (the released RAAT code's way of building ``x''``), so one attack serves every group;
* ``budget_mode="ball"``: ``x + delta_g`` is PGD run again inside the ``s_g * eps`` ball (step size
  scaled by ``s_g``), the budget read literally (paper eq. 8 for ``x''``).

Clean-misclassified samples use ``misclassified_scale`` (1: the full ``x'``, as in RAAT). With both
scales 1 this is exactly PGD-AT; with ``boundary_scale = eta`` and ``nonboundary_scale = 1`` it is
RAAT's BOUND treatment without DICAR (``raat`` with ``dicar=False``).

Each epoch logs the partition measured during training (:meth:`BoundaryBudget.epoch_metrics`):
``train_boundary_frac``, ``train_nonboundary_frac``, ``train_misclassified_frac`` (fractions of all
training samples seen) and ``train_boundary_frac_of_correct`` (boundary share of the clean-correct
ones): the boundary fraction over epochs of RAAT, Fig. 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import frozen_eval
from .base import LossOutput, Method, Params, StepContext
from .raat import boundary_mask, reduced_adversarial
from .registry import register

_SCALE_RANGE = (0.0, 1.0)


@dataclass
class BoundaryBudgetParams(Params):
    boundary_scale: float = field(default=1.0, metadata={
        "help": "budget of boundary samples as a fraction of eps (0: clean image, 1: full x')", "range": _SCALE_RANGE})
    nonboundary_scale: float = field(default=1.0, metadata={
        "help": "budget of non-boundary clean-correct samples as a fraction of eps", "range": _SCALE_RANGE})
    misclassified_scale: float = field(default=1.0, metadata={
        "help": "budget of clean-misclassified samples as a fraction of eps (RAAT: 1)", "range": _SCALE_RANGE})
    eta: float = field(default=0.1, metadata={"help": "reduction factor defining boundary samples (RAAT, Eq. 8-9)",
                                              "range": _SCALE_RANGE})
    eta_mode: str = field(default="scale", metadata={
        "help": "x'' for the partition: 'scale' = x + eta (x' - x) (released RAAT code), "
                "'ball' = PGD in the eta*eps ball",
        "choices": ("scale", "ball")})
    budget_mode: str = field(default="scale", metadata={
        "help": "a budget s: 'scale' = x + s (x' - x), 'ball' = PGD again in the s*eps ball",
        "choices": ("scale", "ball")})


@register
class BoundaryBudget(Method):
    """PGD-AT where boundary, non-boundary and misclassified samples get budgets ``s_b``, ``s_n``, ``s_m``.

    ``loss = mean_i CE(z(x_i + s_{g(i)} delta_i), y_i)`` with ``g(i)`` the group of sample ``i`` under
    the current model (RAAT, Eq. 9; docs/experiments.md, boundary_samples). See the module docstring.
    """

    name = "boundary_budget"
    paper = "RAAT, App. C.1, Eq. 8-9, Fig. 2 and 5b (as described there); docs/experiments.md, boundary_samples"
    Params = BoundaryBudgetParams

    def __init__(self, threat=None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        self._counts: dict[str, Any] = {}
        self.on_epoch_start(0)

    # -- pieces -----------------------------------------------------------------------------------
    def scaled(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, scale: float) -> Tensor:
        """``x`` moved by budget ``scale`` per ``budget_mode`` (``x_adv`` is the full-budget attack)."""
        if scale == 1.0:
            return x_adv
        if scale == 0.0:
            return x
        if self.params.budget_mode == "scale":
            return reduced_adversarial(x, x_adv, scale)
        return self.attack(model, x, y, loss="ce", eps=scale * self.threat.eps,
                           step_size=scale * self.threat.step_size)

    def reduced(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        """The reduced adversarial example ``x''`` that defines the partition."""
        eta = self.params.eta
        if self.params.eta_mode == "scale":
            return reduced_adversarial(x, x_adv, eta)
        return self.attack(model, x, y, loss="ce", eps=eta * self.threat.eps, step_size=eta * self.threat.step_size)

    def partition(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(clean_correct, boundary, clean_logits)`` with the model in eval mode and no gradient."""
        x_red = self.reduced(model, x, y, x_adv)
        with frozen_eval(model):
            logits_clean = model(x)
            boundary = boundary_mask(logits_clean, model(x_adv), model(x_red), y)
        return logits_clean.argmax(dim=1) == y, boundary, logits_clean

    # -- the loss ---------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        p = self.params
        x, y = batch.x, batch.y
        x_adv = self.attack(model, x, y, loss="ce")
        correct, boundary, logits_clean = self.partition(model, x, y, x_adv)
        groups = {"boundary": (boundary, p.boundary_scale),
                  "nonboundary": (correct & ~boundary, p.nonboundary_scale),
                  "misclassified": (~correct, p.misclassified_scale)}
        x_train = x_adv.clone()
        for mask, scale in groups.values():
            if scale == 1.0 or not bool(mask.any()):
                continue
            idx = mask.nonzero().flatten()
            x_train[idx] = self.scaled(model, x[idx], y[idx], x_adv[idx], scale)
        logits_train = model(x_train)
        loss = F.cross_entropy(logits_train, y)

        self._counts["n"] += y.shape[0]
        self._counts["correct"] = self._counts["correct"] + correct.sum()
        self._counts["boundary"] = self._counts["boundary"] + boundary.sum()
        parts = {"ce": loss.detach()}
        return LossOutput(loss, parts, y, logits_clean=logits_clean, logits_adv=logits_train.detach(), x=x,
                          x_adv=x_adv, extras={"boundary": boundary, "clean_correct": correct})

    # -- per-epoch partition log --------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self._counts = {"n": 0, "correct": torch.zeros((), dtype=torch.long),
                        "boundary": torch.zeros((), dtype=torch.long)}

    def epoch_metrics(self, trainer: Any) -> dict[str, float]:
        """Fractions of the epoch's training samples (as partitioned at their step) in each group."""
        n = self._counts["n"]
        if not n:
            return {}
        correct, boundary = int(self._counts["correct"]), int(self._counts["boundary"])
        return {"train_boundary_frac": boundary / n,
                "train_nonboundary_frac": (correct - boundary) / n,
                "train_misclassified_frac": (n - correct) / n,
                "train_boundary_frac_of_correct": boundary / correct if correct else float("nan")}


__all__ = ["BoundaryBudget", "BoundaryBudgetParams"]

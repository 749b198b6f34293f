"""ReBAT (Wang et al., NeurIPS 2023) and RPAT++ = ReBAT + the released RP term (RPAT, Sec. 5.3).

Both are PGD-AT (CE on ``x'``, uniform start, BatchNorm in *train* mode while attacking, as in
robust_overfitting/ReBAT: docs/methods.md, common protocol) with a weight average ``f_wa`` kept by the method:

- WA: after every optimiser step ``w_wa <- d * w_wa + (1 - d) * w`` for parameters and BatchNorm
  running statistics (``num_batches_tracked`` copied), with ``d = wa_decay`` (0.999) from epoch
  ``wa_start`` (105 of 200) and ``d = 0`` before, so the WA equals the online model until then.
- ReBAT's BoAT term from ``wa_start``: ``boat_lambda * KL(p_wa(x') || p(x'))`` (batch mean), computed as
  ``F.kl_div(log_softmax(z(x')), softmax(z_wa(x')), reduction="batchmean")``; ``boat_lambda`` = 1
  (ReBAT uses 2 for WRN-34-10 with CutMix).
- "ReBAT$" (``strong_late_attack``): training attack with eps 10/255 and 12 steps (step size unchanged)
  from the first learning-rate decay, epoch ``strong_start`` = 100 of 200 (RPAT, Table 6).
- RPAT++ (``rpat_pp``) from ``wa_start``, with ``b = z_wa(x)``, ``m = z_wa(x + a delta)`` (no gradient,
  a = 0.5): ``rp_lambda * F.kl_div(log_softmax(a z(x')), softmax(m - (1 - a) b), reduction="batchmean")``,
  i.e. ``KL(softmax(m - (1-a) b) || softmax(a z(x')))`` (target first, in the mathematical order).
  The released RPAT++ script adds this term *in place of* BoAT (its loss is CE + RP only), so
  ``rpat_pp`` defaults to ``boat_lambda = 0``; ``boat_lambda = 1`` gives "ReBAT + RP" read literally.

Epochs (``wa_start``, ``strong_start``) refer to a run of ``reference_epochs`` epochs (default: the
configured schedule's own length, 200 for ``rebat``/``sota200``); shorter or longer runs scale them by
the same ratio the trainer applies to learning-rate milestones (:meth:`atkit.core.schedules.Schedule.scaled_to`),
compared against the fractional epoch ``epoch + step / steps_per_epoch``. The WA is forwarded in eval
mode (running statistics). The trainer evaluates :meth:`ReBAT.averaged_model` as ``wa_test_*``, selects
"best" by it and reports it as the final model (docs/methods.md, ReBAT and RPAT++: model selection by PGD-10).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import ThreatModel
from ..core.schedules import get_schedule
from ..core.utils import ConfigError
from .base import LossOutput, Method, Params, StepContext, clean_logits_for_metrics
from .registry import register
from .rpat import check_alpha


@dataclass
class ReBATParams(Params):
    boat_lambda: float = field(default=1.0, metadata={
        "help": "weight lambda_b of the BoAT term KL(p_wa(x')||p(x')) after wa_start (1; 2 for WRN-34-10 + CutMix)",
        "range": (0.0, None)})
    wa_decay: float = field(default=0.999, metadata={"help": "EMA decay of the weight average from wa_start",
                                                     "range": (0.0, 1.0)})
    wa_start: float = field(default=105.0, metadata={
        "help": "epoch (of reference_epochs) from which the WA averages (decay 0 before) and BoAT is on",
        "range": (0.0, None)})
    strong_late_attack: bool = field(default=False, metadata={
        "help": "ReBAT$: stronger training attack (strong_eps, strong_steps) from strong_start"})
    strong_start: float = field(default=100.0, metadata={
        "help": "epoch (of reference_epochs) of the first lr decay, where ReBAT$ switches attack",
        "range": (0.0, None)})
    strong_eps: float = field(default=10 / 255, metadata={"help": "eps of the ReBAT$ attack (threat norm's units)",
                                                          "range": (0.0, None)})
    strong_steps: int = field(default=12, metadata={"help": "steps of the ReBAT$ attack", "range": (1, None)})
    reference_epochs: Optional[int] = field(default=None, metadata={
        "help": "run length wa_start/strong_start refer to (None: the configured schedule's length, 200 for "
                "rebat); other run lengths scale them like the lr milestones", "range": (1, None)})


class WeightAverage:
    """An exponential moving average of a model's parameters and BatchNorm statistics (ReBAT's WA).

    ``update(model, decay)``: ``w_wa <- decay * w_wa + (1 - decay) * w`` for parameters and floating
    buffers, integer buffers (``num_batches_tracked``) copied; ``decay = 0`` copies exactly.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        pairs = list(zip(self.module.parameters(), model.parameters()))
        pairs += list(zip(self.module.buffers(), model.buffers()))
        for avg, cur in pairs:
            if decay == 0.0 or not avg.dtype.is_floating_point:
                avg.copy_(cur)
            else:
                avg.mul_(decay).add_(cur.detach(), alpha=1.0 - decay)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        self.module.eval()
        return self.module(x)


@register
class ReBAT(Method):
    """``CE(z(x'), y) + boat_lambda * KL(p_wa(x') || p(x'))`` with a weight average (see module docstring)."""

    name = "rebat"
    paper = "Wang et al., NeurIPS 2023 (ReBAT); RPAT, Sec. 5.3 and Table 6; docs/methods.md, ReBAT and RPAT++"
    Params = ReBATParams
    default_bn_mode = "train"
    default_random_start = "uniform"
    soft_targets = True

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        self.wa: Optional[WeightAverage] = None
        self._epoch_scale = 1.0
        self._pending_state: Optional[dict[str, Any]] = None

    # -- schedule ------------------------------------------------------------------------------
    def _epoch_float(self, ctx: StepContext) -> float:
        return ctx.epoch + ctx.step / max(ctx.steps_per_epoch, 1)

    def wa_active(self, ctx: StepContext) -> bool:
        """From epoch ``wa_start`` (scaled to the run's length) on: WA decay and the late terms."""
        return self._epoch_float(ctx) >= self.params.wa_start * self._epoch_scale

    def strong_attack_active(self, ctx: StepContext) -> bool:
        return self.params.strong_late_attack and \
            self._epoch_float(ctx) >= self.params.strong_start * self._epoch_scale

    # -- hooks ---------------------------------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        """Build the WA from the trainer's model and scale the epoch thresholds to the run's length."""
        config = trainer.config
        reference = self.params.reference_epochs
        if reference is None:
            sched = get_schedule(config.schedule, **config.schedule_params)
            reference = sched.epochs if sched.name != "constant" else config.resolved_epochs()
        self._epoch_scale = config.resolved_epochs() / reference
        self.attach(trainer.model)

    def attach(self, model: nn.Module) -> None:
        """Start the WA as a copy of ``model`` (restoring a pending checkpoint state, if any)."""
        self.wa = WeightAverage(model)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        if self.wa is None:
            self.attach(model)
        self.wa.update(model, self.params.wa_decay if self.wa_active(ctx) else 0.0)

    def averaged_model(self) -> Optional[nn.Module]:
        """The weight-averaged model the trainer evaluates (``wa_test_*``) and reports as best/final."""
        return self.wa.module if self.wa is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"wa": self.wa.module.state_dict() if self.wa is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        wa_state = (state or {}).get("wa")
        if wa_state is None:
            return
        if self.wa is None:
            self._pending_state = state
            return
        self.wa.module.load_state_dict(wa_state)
        self._pending_state = None

    # -- loss ----------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        if self.wa is None:
            self.attach(model)
        overrides = {}
        if self.strong_attack_active(ctx):
            overrides = dict(eps=self.params.strong_eps, steps=self.params.strong_steps)
        x, y = batch.x, batch.y
        x_adv = self.attack(model, x, y, loss="ce", **overrides)
        logits_clean = clean_logits_for_metrics(model, x, ctx)
        logits_adv = model(x_adv)
        ce = F.cross_entropy(logits_adv, y, label_smoothing=ctx.label_smoothing)
        loss = ce
        parts = {"ce_adv": ce.detach()}
        late = self.wa_active(ctx)
        boat = torch.zeros((), device=x.device)
        if late and self.params.boat_lambda > 0:
            boat = boat_term(logits_adv, self.wa(x_adv))
            loss = loss + self.params.boat_lambda * boat
        parts["boat"] = boat.detach()
        loss = self.late_terms(model, x, x_adv, logits_adv, late, loss, parts)
        return LossOutput(loss, parts, y, logits_clean=logits_clean, logits_adv=logits_adv, x=x, x_adv=x_adv)

    def late_terms(self, model: nn.Module, x: Tensor, x_adv: Tensor, logits_adv: Tensor, late: bool,
                   loss: Tensor, parts: dict[str, Tensor]) -> Tensor:
        """Extra terms of subclasses (RPAT++); ReBAT has none."""
        return loss


def boat_term(logits_adv: Tensor, logits_wa_adv: Tensor) -> Tensor:
    """BoAT: ``KL(p_wa(x') || p(x'))``, summed over classes, batch mean (ReBAT's released code)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_wa_adv.detach(), dim=1),
                    reduction="batchmean")


def rpat_pp_term(logits_adv: Tensor, wa_clean: Tensor, wa_mid: Tensor, alpha: float = 0.5) -> Tensor:
    """RPAT++'s RP term: ``F.kl_div(log_softmax(a z(x')), softmax(m - (1-a) b), reduction="batchmean")``.

    ``b = z_wa(x)``, ``m = z_wa(x + a delta)`` (no gradient). Mathematically
    ``KL(softmax(m - (1-a) b) || softmax(a z(x')))``: if the WA were linear along ``delta``,
    ``m - (1-a) b = a z_wa(x')``, so the term pulls ``a z(x')`` towards the WA's linear prediction.
    """
    target = F.softmax((wa_mid - (1.0 - alpha) * wa_clean).detach(), dim=1)
    return F.kl_div(F.log_softmax(alpha * logits_adv, dim=1), target, reduction="batchmean")


@dataclass
class RPATPPParams(ReBATParams):
    boat_lambda: float = field(default=0.0, metadata={
        "help": "BoAT weight; 0 as in the released RPAT++ script (the RP term replaces BoAT), 1 = 'ReBAT + RP'",
        "range": (0.0, None)})
    rp_lambda: float = field(default=1.0, metadata={"help": "weight of the RPAT++ RP term after wa_start",
                                                    "range": (0.0, None)})
    rp_alpha: float = field(default=0.5, metadata={"help": "interpolation rate a (0.5 in the released code)"})


@register
class RPATPlusPlus(ReBAT):
    """ReBAT with the released RPAT++ term after ``wa_start`` (see the module docstring)."""

    name = "rpat_pp"
    paper = "Wang & Liu, ICCV 2025 (RPAT++: RPAT, Sec. 5.3, Tables 3, 4 and 6); docs/methods.md, ReBAT and RPAT++"
    Params = RPATPPParams

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        alpha = check_alpha(self.params.rp_alpha)
        if not isinstance(alpha, float):
            raise ConfigError(f"rpat_pp.rp_alpha={alpha!r}: RPAT++ takes a fixed number in (0, 1) (0.5 as released)")
        self.params.rp_alpha = alpha

    def late_terms(self, model: nn.Module, x: Tensor, x_adv: Tensor, logits_adv: Tensor, late: bool,
                   loss: Tensor, parts: dict[str, Tensor]) -> Tensor:
        rp = torch.zeros((), device=x.device)
        if late and self.params.rp_lambda > 0:
            a = self.params.rp_alpha
            wa_clean = self.wa(x)
            wa_mid = self.wa(x + a * (x_adv - x))
            rp = rpat_pp_term(logits_adv, wa_clean, wa_mid, a)
            loss = loss + self.params.rp_lambda * rp
        parts["rp"] = rp.detach()
        return loss

"""The Bregman-divergence family of the FAIT/MER paper (Wu et al., "Lower Difficulty and Better Robustness"):
the shared TRADES-shaped base, FAIT, FAIT-MER and FAIT with ``psi = S``.

Every member minimises (FAIT/MER paper, Eq. 3, Sec. 4, Eq. 10, Sec. 5.3.2)::

    CE(z(x), y) + lam * R  -  (beta_clean * h(p(x)) + beta_adv * h(p(x')))

where ``psi`` is the convex function behind the Bregman divergence ``D_psi``:

- ``psi = -H`` (negative entropy): ``D_psi = KL``, ``h = H`` (Shannon entropy), attack objective KL;
- ``psi = S = sum_k p_k^2``: ``D_psi(p, q) = sum_k (p_k - q_k)^2``, ``h = -S``, attack objective SE.

``R = D(p(x), p(x'))`` (TRADES, SCORE, MER) or, for FAIT, ``R' = D(p(x), p(x*)) + D(p(x*), p(x'))``
with ``x*`` the iterate after ``I`` steps of the same PGD run that produces ``x'``. The entropy
terms are present only in the MER members (:mod:`atkit.methods.mer`); SCORE is in
:mod:`atkit.methods.score`. The members differ only in class attributes (``psi``,
``interpolates``) and in their ``Params`` (defaults of the paper), so the attack, the forwards and
the loss are written once, in :class:`BregmanTRADES` and :func:`bregman_trades_objective`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import ThreatModel
from ..core.utils import ConfigError, check_choice
from .base import LossOutput, Method, Params, StepContext
from .divergences import entropy_per_sample, kl_per_sample, neg_sum_of_squares_per_sample, squared_error_per_sample
from .registry import register


@dataclass(frozen=True)
class Psi:
    """A convex ``psi`` with its Bregman divergence ``D_psi``, its "entropy" ``h = -psi`` and the PGD objective."""

    name: str
    divergence: Callable[[Tensor, Tensor], Tensor]  # (p_logits, q_logits) -> (B,)
    entropy: Callable[[Tensor], Tensor]  # logits -> (B,)
    attack_loss: str  # name in atkit.attacks.ATTACK_OBJECTIVES


PSI: dict[str, Psi] = {
    "neg_entropy": Psi("neg_entropy", kl_per_sample, entropy_per_sample, "kl"),
    "square": Psi("square", squared_error_per_sample, neg_sum_of_squares_per_sample, "sq"),
}


def bregman_trades_objective(
    logits_clean: Tensor,
    logits_adv: Tensor,
    y: Tensor,
    *,
    lam: float,
    psi: str = "neg_entropy",
    logits_star: Optional[Tensor] = None,
    entropy_weights: Optional[tuple[float, float]] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of the FAIT/MER paper's family as a function of logits; returns ``(loss, parts)``.

    ``loss = CE(z(x), y) + lam * R - (beta_clean * mean h(p(x)) + beta_adv * mean h(p(x')))`` with
    ``R = mean D(p(x), p(x'))`` when ``logits_star`` is None and
    ``R' = mean [D(p(x), p(x*)) + D(p(x*), p(x'))]`` otherwise (FAIT, FAIT/MER paper, Sec. 4.1).
    ``D`` and ``h`` follow ``psi`` (module docstring); divergences are summed over classes and
    every term is averaged over the batch. ``entropy_weights = (beta_clean, beta_adv)`` adds the MER
    term (eq. 10); None leaves it out. Nothing is detached: all three predictions carry gradients,
    as in Algorithm 1 (``grad_theta L_fait``) and in TRADES. ``parts`` holds detached scalars:
    ``ce``, ``robust`` (R or R'), for FAIT ``div_clean_star`` and ``div_star_adv``, for MER
    ``entropy_clean`` and ``entropy_adv`` (the mean ``h`` values, before the betas).
    """
    check_choice("psi", psi, PSI)
    spec = PSI[psi]
    natural = F.cross_entropy(logits_clean, y)
    parts: dict[str, Tensor] = {"ce": natural.detach()}
    if logits_star is None:
        robust = spec.divergence(logits_clean, logits_adv).mean()
    else:
        div_clean_star = spec.divergence(logits_clean, logits_star).mean()
        div_star_adv = spec.divergence(logits_star, logits_adv).mean()
        robust = div_clean_star + div_star_adv
        parts.update(div_clean_star=div_clean_star.detach(), div_star_adv=div_star_adv.detach())
    parts["robust"] = robust.detach()
    loss = natural + lam * robust
    if entropy_weights is not None:
        beta_clean, beta_adv = entropy_weights
        entropy_clean = spec.entropy(logits_clean).mean()
        entropy_adv = spec.entropy(logits_adv).mean()
        # Subtracting the entropy: minimising the loss raises it (maximum entropy regularisation).
        loss = loss - (beta_clean * entropy_clean + beta_adv * entropy_adv)
        parts.update(entropy_clean=entropy_clean.detach(), entropy_adv=entropy_adv.detach())
    return loss, parts


def lam_field(default: float) -> Any:
    return field(default=default, metadata={"help": "weight lambda of the robustness term R (or R' for FAIT)",
                                            "range": (0.0, None)})


@dataclass
class BregmanParams(Params):
    lam: float = lam_field(6.0)
    interpolation_step: int = field(default=2, metadata={
        "help": "I: the PGD iterate taken as x* (FAIT's interpolated adversary, and the x* of the logged R'); "
                "0 <= I <= threat steps, the paper uses 0 < I < K and I = 2",
        "range": (0, None)})
    log_r: bool = field(default=False, metadata={
        "help": "log R = D(p(x), p(x')) and R' = D(p(x), p(x*)) + D(p(x*), p(x')) after each epoch on the first "
                "log_r_samples training images (FAIT/MER paper, Fig. 4)",
        "choices": (False, True)})
    log_r_samples: int = field(default=1000, metadata={"help": "how many training images R and R' average over",
                                                       "range": (1, None)})


@dataclass
class EntropyParams(BregmanParams):
    """MER weights; the paper's best (Table 3) is beta_clean = 1, beta_adv = 0."""

    beta_clean: float = field(default=1.0, metadata={"help": "weight of the clean-prediction entropy h(p(x))",
                                                     "range": (0.0, None)})
    beta_adv: float = field(default=0.0, metadata={"help": "weight of the adversarial-prediction entropy h(p(x'))",
                                                   "range": (0.0, None)})


class BregmanTRADES(Method):
    """TRADES-shaped base of the FAIT/MER paper's family: the loss of :func:`bregman_trades_objective`.

    The attack is TRADES' (docs/methods.md, baselines): PGD maximising ``D_psi(p(x), p(x'))`` from
    ``x + 0.001 N(0,1)``, BatchNorm in eval mode. ``x*`` is the iterate after
    ``interpolation_step`` steps of that same run (``return_iterate_at``), so FAIT costs no extra
    attack steps (FAIT/MER paper, Algorithm 1, lines 5-10). The logits of ``x``, ``x*`` and ``x'`` come
    from three train-mode forwards, each carrying gradients.

    Subclasses set ``psi`` (``"neg_entropy"`` or ``"square"``), ``interpolates`` (FAIT) and a
    ``Params`` with the paper's defaults; MER members use a ``Params`` deriving from
    :class:`EntropyParams`.
    """

    paper = "FAIT/MER paper (Wu et al., arXiv:2208.12511); docs/methods.md, FAIT and MER"
    Params = BregmanParams
    default_random_start = "normal"
    psi: ClassVar[str] = "neg_entropy"
    interpolates: ClassVar[bool] = False

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        if self.params.interpolation_step > self.threat.steps:
            raise ConfigError(f"{self.name}.interpolation_step={self.params.interpolation_step} is larger than the "
                              f"attack's steps={self.threat.steps}; choose I in [0, {self.threat.steps}] "
                              "(the paper uses I = 2 of 10).")

    @property
    def entropy_weights(self) -> Optional[tuple[float, float]]:
        """``(beta_clean, beta_adv)`` for MER members, None for the others."""
        if isinstance(self.params, EntropyParams):
            return (self.params.beta_clean, self.params.beta_adv)
        return None

    def attack_with_iterate(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> tuple[Tensor, Tensor]:
        """``(x', x*)``: the end point and the ``I``-th iterate of the method's PGD run."""
        return self.attack(model, x, y, loss=PSI[self.psi].attack_loss,
                           return_iterate_at=self.params.interpolation_step, **overrides)

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        if self.interpolates:
            x_adv, x_star = self.attack_with_iterate(model, batch.x, batch.y)
        else:
            x_adv, x_star = self.attack(model, batch.x, batch.y, loss=PSI[self.psi].attack_loss), None
        logits_clean = model(batch.x)
        logits_star = model(x_star) if x_star is not None else None
        logits_adv = model(x_adv)
        loss, parts = bregman_trades_objective(logits_clean, logits_adv, batch.y, lam=self.params.lam, psi=self.psi,
                                               logits_star=logits_star, entropy_weights=self.entropy_weights)
        extras = {"x_star": x_star} if x_star is not None else {}
        return LossOutput(loss, parts, batch.y, logits_clean=logits_clean, logits_adv=logits_adv, x=batch.x,
                          x_adv=x_adv, extras=extras)

    def epoch_metrics(self, trainer: Any) -> dict[str, float]:
        """``R`` and ``R_prime`` on ``log_r_samples`` class-stratified training images when ``log_r`` is on."""
        if not self.params.log_r:
            return {}
        n = min(self.params.log_r_samples, len(trainer.dataset.train_y))
        x, y, _ = trainer.dataset.eval_subset(n, split="train")
        x, y = x.to(trainer.device).float() / 255, y.to(trainer.device)
        batch_size = getattr(getattr(getattr(trainer, "config", None), "eval", None), "batch_size", 500)
        return robustness_losses(self, trainer.model, x, y, batch_size=batch_size)


def robustness_losses(method: BregmanTRADES, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500,
                      seed: int = 0) -> dict[str, float]:
    """FAIT/MER paper, Fig. 4: ``R = mean D(p(x), p(x'))`` and ``R' = mean [D(p(x), p(x*)) + D(p(x*), p(x'))]``.

    ``x'`` and ``x*`` (iterate ``I = interpolation_step``) come from one run of the method's own
    attack; ``D`` is the method's divergence (KL for ``psi = -H``, where ``R`` is TRADES' KL).
    The model is in eval mode throughout (attack included, so BatchNorm statistics are untouched)
    and the measurement runs without parameter gradients. The attack's random start draws from a
    forked RNG seeded with ``seed``, so the numbers are comparable across epochs and training's
    random stream is the same with and without logging. The model's mode is restored afterwards.
    """
    divergence = PSI[method.psi].divergence
    was_training = model.training
    model.eval()
    total_r = total_r_prime = 0.0
    cuda_devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
        if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                x_adv, x_star = method.attack_with_iterate(model, xb, yb, bn_mode="eval")
                with torch.no_grad():
                    z, z_star, z_adv = model(xb), model(x_star), model(x_adv)
                    total_r += divergence(z, z_adv).sum().item()
                    total_r_prime += (divergence(z, z_star) + divergence(z_star, z_adv)).sum().item()
    finally:
        model.train(was_training)
    n = max(x.shape[0], 1)
    return {"R": total_r / n, "R_prime": total_r_prime / n}


@dataclass
class FAITParams(BregmanParams):
    lam: float = lam_field(12.0)


@register
class FAIT(BregmanTRADES):
    """FAIT: ``CE(z(x), y) + lam * [KL(p(x) || p(x*)) + KL(p(x*) || p(x'))]``, lam = 12, I = 2.

    ``x*`` = iterate ``I`` of the 10-step KL-PGD that yields ``x'`` (FAIT/MER paper, Sec. 4.1,
    Algorithm 1; Table 1 for lam, Table 2 for I). The paper writes ``R'_theta`` with ``p_theta`` on all
    three points and takes ``grad_theta`` of the whole loss, so gradients flow through ``p(x)``,
    ``p(x*)`` and ``p(x')``; ``x*`` itself is an input (no gradient to the attack), and its logits
    come from a train-mode forward like those of ``x'``. ``I = 0`` gives ``x*`` = PGD start
    (``R' ~ TRADES' KL``), ``I = steps`` gives ``x* = x'`` (``R' = TRADES' KL`` exactly).
    """

    name = "fait"
    Params = FAITParams
    interpolates = True


@dataclass
class FAITMERParams(EntropyParams):
    lam: float = lam_field(30.0)


@register
class FAITMER(BregmanTRADES):
    """FAIT-MER: FAIT's loss ``- (beta_clean H(p(x)) + beta_adv H(p(x')))``, lam = 30 (FAIT/MER paper, Table 4).

    The paper gives no separate betas for FAIT-MER; the TRADES-MER choice (1, 0) of Table 3 is the default.
    """

    name = "fait_mer"
    Params = FAITMERParams
    interpolates = True


@dataclass
class FAITSParams(BregmanParams):
    lam: float = lam_field(8.0)


@register
class FAITS(BregmanTRADES):
    """FAIT with ``psi = S``: ``CE(z(x), y) + lam * [SE(p(x), p(x*)) + SE(p(x*), p(x'))]``, lam = 8.

    ``SE(p, q) = sum_k (p_k - q_k)^2``. Built on SCORE, so the attack maximises SE too ("for FAIT,
    there is no other difference from Algorithm 1", FAIT/MER paper, Sec. 5.3.2, Table 6).
    """

    name = "fait_s"
    Params = FAITSParams
    psi = "square"
    interpolates = True

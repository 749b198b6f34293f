"""RAAT and RAAT++: robust alignment adversarial training (RAAT, App. C, Table 4; docs/methods.md, RAAT).

Our reading of the paper and its released code (``adv_train_bd.py``, run as ``--mode adv_train --BD``
for RAAT and ``--mode adv_mart --BD`` for RAAT++):

* **What RAAT builds on.** PGD-AT trained on two augmented views of every image (the
  Consistency-AT data pipeline, without Consistency-AT's JS term): the 2B views are attacked
  together, and the supervised term is one CE averaged over the 2B samples. RAAT++ builds on MART
  in the same way (BCE instead of CE, plus MART's ``KL(p(x) || p(x')) (1 - p_y(x))`` term).
* **Boundary partition** (:func:`boundary_mask`), per view, with an eval-mode forward and no
  gradient: clean-correct samples whose adversarial ``x'`` *and* reduced adversarial
  ``x'' = x + eta (x' - x)`` (eta = 0.1, ``eta_mode="scale"``, released code) are both
  misclassified are *boundary samples*; ``eta_mode="ball"`` instead attacks the ``eta * eps`` ball
  (paper eq. 8) with the same attack, step size scaled by ``eta``.
* **BOUND**: boundary samples are trained on ``x''``, every other sample (non-boundary and
  clean-misclassified) on ``x'``: ``CE(z(x''), y)`` / ``CE(z(x'), y)`` (BCE for RAAT++).
* **DICAR** (released code, ``dicar_form="code"``): ``lam_mix ~ Beta(gamma, gamma)``,
  ``r = max(lam_mix, 1 - lam_mix)``, input ``r x1' + (1 - r) x2'`` (the two attacked views), target
  the same mixture of the two clean views' predictions, ``JS_T`` with ``T = 0.5`` averaged over the
  images whose two views are both clean-correct, weight ``lam = 1``. The released code mixes the
  clean views' *logits* (then applies the tempered softmax inside JS) and does not detach them;
  ``dicar_target_space="probs"`` mixes the tempered probabilities instead (an option; docs/methods.md, RAAT).
  ``dicar_form="paper"`` is Table 4 read as ``JS(p(beta x1' + (1 - beta) x1) || beta p(x1) +
  (1 - beta) p(x2))`` with ``beta ~ Beta(gamma, gamma)`` used as drawn (no max), target mixed in
  probability space unless ``dicar_target_space`` says otherwise.
* Clean-view logits used by DICAR and by RAAT++'s KL term come from one train-mode forward with
  gradient, as in the released code; the partition's forwards are eval-mode and gradient-free.
* RAAT++'s KL weight ``mart_lam`` defaults to 6: the released command line runs the MART mode with
  its default ``beta = 6``. Table 4 writes one shared ``lambda`` (= 1) in front of both the JS and
  the KL term; set ``mart_lam=1`` for that reading.

The loss parts include ``boundary_frac`` (share of boundary samples in the batch; measured even with
``bound=False`` in ``"scale"`` mode, for the boundary-fraction curves of docs/experiments.md, boundary_samples);
``LossOutput.extras["boundary"]`` is the per-sample mask.

Switches for the ablation of RAAT, Fig. 5a: ``bound`` and ``dicar``. ``two_views`` defaults to
``dicar`` so that ``bound=False, dicar=False`` is exactly PGD-AT (``CE(z(x'), y)`` on one view).
The attack is the base method's: CE, BatchNorm in eval mode (docs/methods.md, common protocol), uniform
start for RAAT, ``x + 0.001 N(0, 1)`` for RAAT++ (MART's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import ThreatModel, frozen_eval
from ..core.utils import ConfigError
from ..models import predict_labels
from .base import LossOutput, Method, Params, StepContext
from .divergences import js_with_temperature, kl_per_sample
from .mart import boosted_ce
from .registry import register


# ------------------------------------------------------------------------------ public helpers
def reduced_adversarial(x: Tensor, x_adv: Tensor, eta: float) -> Tensor:
    """``x'' = x + eta (x' - x)``: the full perturbation scaled by ``eta`` (released RAAT code)."""
    return x + eta * (x_adv - x)


def boundary_mask(clean_logits: Tensor, adv_logits: Tensor, reduced_logits: Tensor, y: Tensor,
                  num_classes: Optional[int] = None) -> Tensor:
    """Boundary samples of RAAT, Eq. 9: ``f(x) == y`` and ``f(x') != y`` and ``f(x'') != y``.

    Inputs are the logits of the clean, adversarial and reduced adversarial images (any order of
    computation; the training code uses eval-mode, gradient-free forwards) and the labels; returns a
    bool mask ``(B,)``. Predictions are the argmax, or :func:`atkit.models.predict_labels` when
    ``num_classes`` is given (dummy-class heads). A clean-misclassified sample is never a boundary
    sample; a clean-correct sample whose ``x''`` is still classified correctly is a *non-boundary*
    sample. Eq. 9 tests only ``f(x'') != y``; the released code (and this function) also require
    ``f(x') != y``.
    """
    def pred(logits: Tensor) -> Tensor:
        if num_classes is None:
            return logits.argmax(dim=1)
        return predict_labels(logits, num_classes)

    return (pred(clean_logits) == y) & (pred(adv_logits) != y) & (pred(reduced_logits) != y)


def dicar_term(mixed_logits: Tensor, target_logits_1: Tensor, target_logits_2: Tensor, weight: float,
               temperature: float = 0.5, target_space: str = "logits", m_floor: float = 1e-8) -> Tensor:
    """``JS_T(p_T(z_mix) || target)`` averaged over the rows, where the target mixes two predictions with
    ``weight`` on the first: ``softmax((w z1 + (1 - w) z2) / T)`` (``target_space="logits"``, released
    code) or ``w softmax(z1 / T) + (1 - w) softmax(z2 / T)`` (``"probs"``). ``JS = (KL(p||M) + KL(q||M)) / 2``,
    ``M = (p + q) / 2`` clamped at ``m_floor`` (Consistency-AT's JS, docs/methods.md, baselines)."""
    if target_space == "logits":
        return js_with_temperature(mixed_logits, weight * target_logits_1 + (1.0 - weight) * target_logits_2,
                                   temperature, m_floor)
    if target_space != "probs":
        raise ConfigError(f"dicar target_space={target_space!r}; choose 'logits' or 'probs'")
    p = F.softmax(mixed_logits / temperature, dim=1)
    q = (weight * F.softmax(target_logits_1 / temperature, dim=1)
         + (1.0 - weight) * F.softmax(target_logits_2 / temperature, dim=1))
    log_m = ((p + q) / 2).clamp_min(m_floor).log()
    kl_p = (torch.xlogy(p, p) - p * log_m).sum(dim=1)
    kl_q = (torch.xlogy(q, q) - q * log_m).sum(dim=1)
    return (0.5 * (kl_p + kl_q)).mean()


# ------------------------------------------------------------------------------------- methods
@dataclass
class RAATParams(Params):
    eta: float = field(default=0.1, metadata={"help": "reduction factor of the perturbation for x''",
                                              "range": (0.0, 1.0)})
    eta_mode: str = field(default="scale", metadata={
        "help": "'scale': x'' = x + eta (x' - x) (released code); 'ball': attack the eta*eps ball (paper eq. 8)",
        "choices": ("scale", "ball")})
    bound: bool = field(default=True, metadata={"help": "train boundary samples on x'' (BOUND ablation switch)",
                                                "choices": (False, True)})
    dicar: bool = field(default=True, metadata={"help": "add the DICAR consistency term (ablation switch)",
                                                "choices": (False, True)})
    lam: float = field(default=1.0, metadata={"help": "weight of the DICAR term", "range": (0.0, None)})
    gamma: float = field(default=0.75, metadata={"help": "Beta(gamma, gamma) of the DICAR mixing weight",
                                                 "range": (1e-6, None)})
    temperature: float = field(default=0.5, metadata={"help": "softmax temperature T of the DICAR JS",
                                                      "range": (1e-6, None)})
    dicar_form: str = field(default="code", metadata={
        "help": "'code': mix the two attacked views, r = max(lam, 1-lam); "
                "'paper': Table 4, mix x1' with x1, beta as drawn",
        "choices": ("code", "paper")})
    dicar_target_space: Optional[str] = field(default=None, metadata={
        "help": "mix the clean views' 'logits' or tempered 'probs' for the DICAR target (None: logits for "
                "dicar_form='code', probs for 'paper')", "choices": (None, "logits", "probs")})
    mix_lambda: Optional[float] = field(default=None, metadata={
        "help": "fixed DICAR mixing draw instead of Beta(gamma, gamma) (None: sample each step)", "range": (0.0, 1.0)})
    two_views: Optional[bool] = field(default=None, metadata={
        "help": "train on two augmented views (None: exactly when dicar is on)", "choices": (None, False, True)})


@dataclass
class RAATPPParams(RAATParams):
    mart_lam: float = field(default=6.0, metadata={
        "help": "weight of MART's KL(p(x)||p(x'))(1 - p_y(x)) term (released MART mode: 6; Table 4's shared lambda: 1)",
        "range": (0.0, None)})


@register
class RAAT(Method):
    """RAAT: PGD-AT on two views + boundary treatment (BOUND) + DICAR; see the module docstring.

    ``loss = mean_i CE(z(s_i), y_i) + lam * DICAR`` with ``s_i = x''_i`` for boundary samples and
    ``x'_i`` otherwise (RAAT, Table 4, released code).
    """

    name = "raat"
    paper = "RAAT (Wang et al., arXiv:2604.26496), App. C.2, Table 4; released RAAT code; docs/methods.md, RAAT"
    Params = RAATParams
    mart_based = False

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        p = self.params
        # An instance attribute: the trainer asks the method object whether to load two views.
        self.needs_two_views = p.dicar if p.two_views is None else bool(p.two_views)
        if p.dicar and not self.needs_two_views:
            raise ConfigError(f"{self.name}: dicar=True needs two_views=True (DICAR mixes two augmented views)")

    # -- pieces -----------------------------------------------------------------------------------
    def reduced(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        """The reduced adversarial example ``x''`` per ``eta_mode``."""
        if self.params.eta_mode == "scale":
            return reduced_adversarial(x, x_adv, self.params.eta)
        eta = self.params.eta
        return self.attack(model, x, y, loss="ce", eps=eta * self.threat.eps, step_size=eta * self.threat.step_size)

    def mix_weight(self) -> float:
        """The DICAR mixing weight: ``r = max(l, 1 - l)`` (code form) or ``l`` (paper form),
        ``l ~ Beta(gamma, gamma)`` (or the fixed ``mix_lambda``)."""
        lam = self.params.mix_lambda
        if lam is None:
            g = torch.tensor(float(self.params.gamma))
            lam = float(torch.distributions.Beta(g, g).sample())
        return max(lam, 1.0 - lam) if self.params.dicar_form == "code" else lam

    def supervised(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-sample supervised loss: CE (RAAT) or MART's BCE (RAAT++)."""
        return boosted_ce(logits, y) if self.mart_based else F.cross_entropy(logits, y, reduction="none")

    # -- the loss ---------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        p = self.params
        b = batch.x.shape[0]
        if self.needs_two_views:
            if batch.x2 is None:
                raise ConfigError(f"{self.name} needs two augmented views: build the loader with two_views=True")
            x, y = torch.cat([batch.x, batch.x2]), torch.cat([batch.y, batch.y])
        else:
            x, y = batch.x, batch.y
        x_adv = self.attack(model, x, y, loss="ce")

        # Partition with the current model as a fixed indicator (eval mode, no gradient).
        # The boundary mask is also measured with BOUND off (cheap in "scale" mode), so the boundary
        # fraction can be tracked over epochs for the ablations (docs/experiments.md, boundary_samples).
        want_mask = p.bound or p.eta_mode == "scale"
        x_red = self.reduced(model, x, y, x_adv) if want_mask else None
        logits_eval_clean = logits_eval_adv = None
        boundary = torch.zeros_like(y, dtype=torch.bool)
        if want_mask or p.dicar or ctx.track_clean:
            with frozen_eval(model):
                logits_eval_clean = model(x)
                if want_mask:
                    logits_eval_adv = model(x_adv)
                    boundary = boundary_mask(logits_eval_clean, logits_eval_adv, model(x_red), y)
        clean_correct = None if logits_eval_clean is None else logits_eval_clean.argmax(dim=1) == y

        train_inputs = x_adv
        if p.bound:
            train_inputs = torch.where(boundary.view(-1, *([1] * (x.dim() - 1))), x_red, x_adv)
        logits_train = model(train_inputs)
        sup = self.supervised(logits_train, y).mean()
        loss = sup
        parts: dict[str, Tensor] = {"bce" if self.mart_based else "ce": sup.detach(),
                                    "boundary_frac": boundary.float().mean()}

        logits_clean = model(x) if (p.dicar or self.mart_based) else None
        if p.dicar:
            both = clean_correct[:b] & clean_correct[b:]
            idx = both.nonzero().flatten()
            if idx.numel() > 0:
                w = self.mix_weight()
                if p.dicar_form == "code":
                    mixed = w * x_adv[:b][idx] + (1.0 - w) * x_adv[b:][idx]
                else:
                    mixed = w * x_adv[:b][idx] + (1.0 - w) * x[:b][idx]
                space = p.dicar_target_space or ("logits" if p.dicar_form == "code" else "probs")
                dicar = dicar_term(model(mixed), logits_clean[:b][idx], logits_clean[b:][idx], w,
                                   p.temperature, space)
            else:
                dicar = torch.zeros((), device=loss.device)
            loss = loss + p.lam * dicar
            parts["dicar"] = dicar.detach()
            parts["dicar_frac"] = both.float().mean()
        if self.mart_based:
            p_true = F.softmax(logits_clean, dim=1).gather(1, y[:, None]).squeeze(1)
            # Table 4 measures the KL at the full adversarial x' for every sample, boundary or not.
            logits_full_adv = model(x_adv) if p.bound and bool(boundary.any()) else logits_train
            weighted_kl = (kl_per_sample(logits_clean, logits_full_adv) * (1.0 - p_true)).mean()
            loss = loss + self.params.mart_lam * weighted_kl
            parts["weighted_kl"] = weighted_kl.detach()
        return LossOutput(loss, parts, y, logits_clean=logits_eval_clean, logits_adv=logits_eval_adv
                          if logits_eval_adv is not None else logits_train.detach(), x=x, x_adv=x_adv,
                          extras={"boundary": boundary, "x_reduced": x_red})


@register
class RAATPP(RAAT):
    """RAAT++: MART (BCE + ``mart_lam * KL(p(x) || p(x')) (1 - p_y(x))``) with BOUND and DICAR.

    ``loss = mean_i BCE(z(s_i), y_i) + lam * DICAR + mart_lam * mean_i KL(p(x_i) || p(x'_i)) (1 - p_y(x_i))``
    with ``s_i`` as in RAAT (RAAT, Table 4).
    """

    name = "raat_pp"
    paper = "RAAT (Wang et al., arXiv:2604.26496), App. C.2, Table 4 (RAAT++); docs/methods.md, RAAT"
    Params = RAATPPParams
    mart_based = True
    default_random_start = "normal"


__all__ = ["RAAT", "RAATPP", "RAATParams", "RAATPPParams", "boundary_mask", "dicar_term", "reduced_adversarial"]

"""MART: misclassification-aware adversarial training (Wang et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import LossOutput, Method, Params, StepContext, Term
from .divergences import kl_per_sample
from .registry import register


@dataclass
class MARTParams(Params):
    lam: float = field(default=6.0, metadata={"help": "weight lambda of the misclassification-weighted KL term",
                                              "range": (0.0, None)})


def mart_margin(logits_adv: Tensor, y: Tensor) -> Tensor:
    """The margin part of MART's BCE, per sample: ``-log(1.0001 - max_{k != y} p_k(x'))`` (Wang et al. 2020)."""
    probs = F.softmax(logits_adv, dim=1)
    others = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), float("-inf"))
    # The 1e-12 keeps the log finite in the (rare) case the wrong-class probability reaches 1.0001.
    return -torch.log(1.0001 - others.amax(dim=1) + 1e-12)


def boosted_ce(logits_adv: Tensor, y: Tensor) -> Tensor:
    """MART's BCE, per sample: ``CE(z(x'), y) - log(1.0001 - max_{k != y} p_k(x'))`` (Wang et al. 2020, eq. 6)."""
    margin = mart_margin(logits_adv, y)  # before the CE, as always: the gradients then sum in the same order
    return F.cross_entropy(logits_adv, y, reduction="none") + margin


def misclassification_weighted_kl(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    """``mean_i[KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i))]`` (Wang et al. 2020, eq. 7)."""
    p_true = F.softmax(logits_clean, dim=1).gather(1, y[:, None]).squeeze(1)
    return (kl_per_sample(logits_clean, logits_adv) * (1.0 - p_true)).mean()


@register
class MART(Method):
    """``BCE(p(x'), y) + lam * mean_i[KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i))]``.

    CE attack from ``x + 0.001 N(0,1)``, BatchNorm in eval mode (docs/methods.md, baselines).
    """

    name = "mart"
    paper = "Wang et al., ICLR 2020; docs/methods.md, baselines"
    Params = MARTParams
    default_random_start = "normal"
    regularizer_uses_clean = True

    def regularizer(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, logits_clean: Optional[Tensor],
                    logits_adv: Tensor) -> list[Term]:
        """The BCE margin ``mean(-log(1.0001 - max_{k != y} p_k(x')))`` plus ``lam`` times the weighted KL: MART
        without the ``CE(z(x'), y)`` part of its BCE (its classification term); the margin on float32 logits, as the
        DUCAT composition has always taken it."""
        return [Term("margin", mart_margin(logits_adv.float(), y).mean()),
                Term("weighted_kl", misclassification_weighted_kl(logits_clean, logits_adv, y), self.params.lam)]

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss=self.attack_loss)
        logits_clean = model(batch.x)
        logits_adv = model(x_adv)
        # The BCE is one per-sample sum (CE + margin) before the mean, so the loss does not reuse regularizer().
        bce = boosted_ce(logits_adv, batch.y).mean()
        weighted_kl = misclassification_weighted_kl(logits_clean, logits_adv, batch.y)
        loss = bce + self.params.lam * weighted_kl
        return LossOutput(loss, {"bce": bce.detach(), "weighted_kl": weighted_kl.detach()}, batch.y,
                          logits_clean=logits_clean, logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

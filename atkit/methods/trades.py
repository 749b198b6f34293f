"""TRADES (Zhang et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import LossOutput, Method, Params, StepContext, Term, weighted_sum
from .divergences import kl_per_sample
from .registry import register


@dataclass
class TRADESParams(Params):
    lam: float = field(default=6.0, metadata={"help": "weight lambda (1/beta in the paper's notation) of the KL term",
                                              "range": (0.0, None)})


@register
class TRADES(Method):
    """``CE(z(x), y) + lam * KL(p(x) || p(x'))`` (KL summed over classes, mean over the batch).

    The attack maximises the same KL from ``x + 0.001 N(0,1)`` with BatchNorm in eval mode
    (Zhang et al., ICML 2019, Eq. 5; docs/methods.md, baselines).
    """

    name = "trades"
    paper = "Zhang et al., ICML 2019; docs/methods.md, baselines"
    Params = TRADESParams
    default_random_start = "normal"
    attack_loss = "kl"
    regularizer_uses_clean = True
    soft_targets = True

    def regularizer(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, logits_clean: Optional[Tensor],
                    logits_adv: Tensor) -> list[Term]:
        """``lam * KL(p(x) || p(x'))`` (KL summed over classes, batch mean)."""
        return [Term("kl", kl_per_sample(logits_clean, logits_adv).mean(), self.params.lam)]

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss=self.attack_loss)
        logits_clean = model(batch.x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits_clean, batch.y, label_smoothing=ctx.label_smoothing)
        terms = self.regularizer(model, batch.x, x_adv, batch.y, logits_clean, logits_adv)
        loss = natural + weighted_sum(terms)
        return LossOutput(loss, {"ce": natural.detach(), **{t.name: t.value.detach() for t in terms}}, batch.y,
                          logits_clean=logits_clean, logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

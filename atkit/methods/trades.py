"""TRADES (Zhang et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn
import torch.nn.functional as F

from .base import LossOutput, Method, Params, StepContext
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

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss="kl")
        logits_clean = model(batch.x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits_clean, batch.y)
        robust = kl_per_sample(logits_clean, logits_adv).mean()
        loss = natural + self.params.lam * robust
        return LossOutput(loss, {"ce": natural.detach(), "kl": robust.detach()}, batch.y,
                          logits_clean=logits_clean, logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

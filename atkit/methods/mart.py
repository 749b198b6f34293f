"""MART: misclassification-aware adversarial training (Wang et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import LossOutput, Method, Params, StepContext
from .divergences import kl_per_sample
from .registry import register


@dataclass
class MARTParams(Params):
    lam: float = field(default=6.0, metadata={"help": "weight lambda of the misclassification-weighted KL term",
                                              "range": (0.0, None)})


def boosted_ce(logits_adv: Tensor, y: Tensor) -> Tensor:
    """MART's BCE, per sample: ``CE(z(x'), y) - log(1.0001 - max_{k != y} p_k(x'))`` (Wang et al. 2020, eq. 6)."""
    probs = F.softmax(logits_adv, dim=1)
    others = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), float("-inf"))
    # The 1e-12 keeps the log finite in the (rare) case the wrong-class probability reaches 1.0001.
    margin_term = -torch.log(1.0001 - others.amax(dim=1) + 1e-12)
    return F.cross_entropy(logits_adv, y, reduction="none") + margin_term


@register
class MART(Method):
    """``BCE(p(x'), y) + lam * mean_i[KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i))]``.

    CE attack from ``x + 0.001 N(0,1)``, BatchNorm in eval mode (docs/methods.md, baselines).
    """

    name = "mart"
    paper = "Wang et al., ICLR 2020; docs/methods.md, baselines"
    Params = MARTParams
    default_random_start = "normal"

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss="ce")
        logits_clean = model(batch.x)
        logits_adv = model(x_adv)
        bce = boosted_ce(logits_adv, batch.y).mean()
        p_true = F.softmax(logits_clean, dim=1).gather(1, batch.y[:, None]).squeeze(1)
        weighted_kl = (kl_per_sample(logits_clean, logits_adv) * (1.0 - p_true)).mean()
        loss = bce + self.params.lam * weighted_kl
        return LossOutput(loss, {"bce": bce.detach(), "weighted_kl": weighted_kl.detach()}, batch.y,
                          logits_clean=logits_clean, logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

"""PGD adversarial training (Madry et al. 2018)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .base import LossOutput, Method, StepContext, clean_logits_for_metrics
from .registry import register


@register
class PGDAT(Method):
    """``CE(z(x'), y)`` with ``x'`` from PGD on the CE loss, uniform random start (docs/methods.md, baselines)."""

    name = "pgd_at"
    paper = "Madry et al., ICLR 2018; docs/methods.md, baselines"

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss="ce")
        logits_clean = clean_logits_for_metrics(model, batch.x, ctx)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, batch.y)
        return LossOutput(loss, {"ce_adv": loss.detach()}, batch.y, logits_clean=logits_clean,
                          logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

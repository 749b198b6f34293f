"""PGD adversarial training (Madry et al. 2018)."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import LossOutput, Method, StepContext, Term, clean_logits_for_metrics
from .registry import register


@register
class PGDAT(Method):
    """``CE(z(x'), y)`` with ``x'`` from PGD on the CE loss, uniform random start (docs/methods.md, baselines)."""

    name = "pgd_at"
    paper = "Madry et al., ICLR 2018; docs/methods.md, baselines"
    soft_targets = True

    def regularizer(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, logits_clean: Optional[Tensor],
                    logits_adv: Tensor) -> Optional[list[Term]]:
        """None: the loss is the classification term ``CE(z(x'), y)`` alone."""
        return None

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_adv = self.attack(model, batch.x, batch.y, loss="ce")
        logits_clean = clean_logits_for_metrics(model, batch.x, ctx)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, batch.y, label_smoothing=ctx.label_smoothing)
        return LossOutput(loss, {"ce_adv": loss.detach()}, batch.y, logits_clean=logits_clean,
                          logits_adv=logits_adv, x=batch.x, x_adv=x_adv)

"""Standard (non-adversarial) training."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .base import LossOutput, Method, StepContext
from .registry import register


@register
class Standard(Method):
    """``CE(z(x), y)``: empirical risk minimisation on clean images (the reference point of every trade-off)."""

    name = "standard"
    paper = "cross-entropy baseline; docs/experiments.md, mse_perception (RPAT, Fig. 2, 'Clean' training)"
    has_adversarial_example = False
    soft_targets = True

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        logits = model(batch.x)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=ctx.label_smoothing)
        return LossOutput(loss, {"ce": loss.detach()}, batch.y, logits_clean=logits.detach(), x=batch.x)

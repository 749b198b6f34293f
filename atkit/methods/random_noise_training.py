"""Training on uniformly perturbed images (the 'Random' training of RPAT, Fig. 2)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..attacks import random_noise
from .base import LossOutput, Method, StepContext, clean_logits_for_metrics
from .registry import register


@register
class RandomNoise(Method):
    """``CE(z(x + u), y)`` with ``u`` uniform in the eps-ball (no model-dependent attack)."""

    name = "random_noise"
    paper = "RPAT, Sec. 3 / Fig. 2 ('Random' training algorithm)"
    soft_targets = True

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        x_noisy = random_noise(batch.x, eps=self.threat.eps, norm=self.threat.norm)
        logits_clean = clean_logits_for_metrics(model, batch.x, ctx)
        logits = model(x_noisy)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=ctx.label_smoothing)
        return LossOutput(loss, {"ce": loss.detach()}, batch.y, logits_clean=logits_clean,
                          logits_adv=logits.detach(), x=batch.x, x_adv=x_noisy)

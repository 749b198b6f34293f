"""Consistency-AT (Tack et al. 2022): PGD-AT plus a JS consistency between two augmented views."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..core.utils import ConfigError
from .base import LossOutput, Method, Params, StepContext, Term, clean_logits_for_metrics, weighted_sum
from .divergences import js_with_temperature
from .registry import register


@dataclass
class ConsistencyParams(Params):
    lam: float = field(default=1.0, metadata={"help": "weight of the JS consistency term", "range": (0.0, None)})
    temperature: float = field(default=0.5, metadata={"help": "softmax temperature T of the JS term",
                                                      "range": (1e-6, None)})


@register
class ConsistencyAT(Method):
    """``CE over the 2B adversarial views + lam * JS(p_T(x1'), p_T(x2'))`` (docs/methods.md, baselines).

    The two independent augmentations ``x1, x2`` of each image are attacked together as one 2B batch
    (CE, uniform start, BatchNorm in eval mode) and trained with one forward of the stacked batch.
    """

    name = "consistency_at"
    paper = "Tack et al., AAAI 2022; docs/methods.md, baselines"
    Params = ConsistencyParams
    needs_two_views = True

    def regularizer(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, logits_clean: Optional[Tensor],
                    logits_adv: Tensor) -> list[Term]:
        """``lam * JS(p_T(x1'), p_T(x2'))`` on the two halves of the stacked 2B batch."""
        b = x.shape[0] // 2
        return [Term("js", js_with_temperature(logits_adv[:b], logits_adv[b:], self.params.temperature),
                     self.params.lam)]

    def loss(self, model: nn.Module, batch, ctx: StepContext) -> LossOutput:
        if batch.x2 is None:
            raise ConfigError("consistency_at needs two augmented views: build the loader with two_views=True")
        x = torch.cat([batch.x, batch.x2])
        y = torch.cat([batch.y, batch.y])
        x_adv = self.attack(model, x, y, loss="ce")
        logits_clean = clean_logits_for_metrics(model, x, ctx)
        logits_adv = model(x_adv)
        ce = F.cross_entropy(logits_adv, y)
        terms = self.regularizer(model, x, x_adv, y, logits_clean, logits_adv)
        loss = ce + weighted_sum(terms)
        return LossOutput(loss, {"ce_adv": ce.detach(), **{t.name: t.value.detach() for t in terms}}, y,
                          logits_clean=logits_clean, logits_adv=logits_adv, x=x, x_adv=x_adv)

"""FGSM-RS: FGSM adversarial training with a random start (Wong, Rice & Kolter, "Fast is better than free:
Revisiting adversarial training", ICLR 2020, arXiv:2001.03994; docs/methods.md, fast adversarial training).

One attack step per training step (L-inf, the paper's threat model):

    delta_0 ~ U(-eps, eps)^d, clipped so that x + delta_0 lies in [0, 1]
    delta   = clip_[-eps, eps](delta_0 + alpha * sign(grad_delta CE(z(x + delta_0), y)))
    x'      = clip_[0, 1](x + delta)                         loss = CE(z(x'), y)

with ``alpha = 1.25 eps`` (the paper's choice; its released ``train_fgsm.py`` uses ``--alpha 10`` at ``--epsilon 8``,
i.e. 10/255 at 8/255). This is :func:`atkit.attacks.pgd` with one step of size ``alpha`` and the uniform start, so
``threat.step_size`` and ``threat.steps`` (the multi-step training attack's budget) are not used. The released code
runs the attack with BatchNorm in train mode (the whole step is one ``model.train()`` pass), hence
``default_bn_mode = "train"``. Under ``norm: l2`` the same construction (uniform start in the L2 ball, one step of
``alpha`` along the normalised gradient, projection) runs; the paper has no L2 experiments.

The paper's training recipe (15 epochs, cyclic learning rate up to 0.2, mixed precision) is not atkit's default
schedule; catastrophic overfitting, which the paper identifies for larger ``alpha`` or longer training, is detected by
the trainer (:mod:`atkit.training.catastrophic_overfitting`) because ``single_step`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from torch import Tensor

from ..attacks import pgd
from .base import Params
from .pgd_at import PGDAT
from .registry import register


@dataclass
class FGSMRSParams(Params):
    alpha_ratio: float = field(default=1.25, metadata={
        "help": "step size alpha as a multiple of eps (1.25: Wong et al. 2020, alpha = 1.25 eps, 10/255 at 8/255)",
        "range": (0.0, None)})


@register
class FGSMRS(PGDAT):
    """``CE(z(x'), y)`` with ``x'`` one signed step of ``alpha_ratio * eps`` from a uniform start, projected to the
    eps-ball and [0, 1] (see the module docstring)."""

    name = "fgsm_rs"
    paper = ("Wong, Rice & Kolter, ICLR 2020, arXiv:2001.03994 (FGSM with random initialisation, alpha = 1.25 eps); "
             "docs/methods.md, fast adversarial training")
    Params = FGSMRSParams
    default_bn_mode = "train"
    default_random_start = "uniform"
    single_step = True

    @property
    def step_size(self) -> float:
        """``alpha = alpha_ratio * eps``."""
        return self.params.alpha_ratio * self.threat.eps

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> Tensor:
        """One PGD step of size ``alpha`` from the method's start (uniform by default), projected to the eps-ball."""
        kwargs: dict[str, Any] = dict(eps=self.threat.eps, step_size=self.step_size, steps=1, norm=self.threat.norm,
                                      random_start=self.start, bn_mode=self.bn_mode)
        kwargs.update(overrides)
        return pgd(model, x, y, **kwargs)

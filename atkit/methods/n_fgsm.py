"""N-FGSM: noise plus one FGSM step, without projection (de Jorge et al., "Make Some Noise: Reliable and Efficient
Single-Step Adversarial Training", NeurIPS 2022, arXiv:2202.01181; docs/methods.md, fast adversarial training).

    eta    ~ U(-k eps, k eps)^d, clipped so that x + eta lies in [0, 1]
    delta  = eta + alpha * sign(grad_eta CE(z(x + eta), y))          (no projection back to the eps-ball)
    x'     = clip_[0, 1](x + delta)                                  loss = CE(z(x'), y)

Defaults from the paper and its released ``train.py``: ``k = 2`` (``--unif 2``), ``alpha = eps`` (``--alpha 8`` at
``--epsilon 8``), no clipping (``--clip -1``); the training perturbation therefore reaches up to ``(k + 1) eps`` in
L-inf. ``clip_ratio = c`` restores the released code's optional clipping of ``delta`` to ``[-c eps, c eps]``
(``c = 1`` is FGSM-RS's projection). The released code attacks with BatchNorm in train mode (one ``model.train()``
pass), hence ``default_bn_mode = "train"``. Defined for the L-inf threat model only (the noise and the sign step are
L-inf constructions); ``threat.step_size`` and ``threat.steps`` are not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..attacks import ThreatModel, check_budget
from ..attacks.losses import ATTACK_OBJECTIVES
from ..attacks.mode import attack_mode
from ..core.utils import ConfigError, unknown_name_error
from .base import Params
from .pgd_at import PGDAT
from .registry import register


def n_fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, noise_ratio: float = 2.0, step_ratio: float = 1.0,
           clip_ratio: Optional[float] = None, loss: str = "ce", bn_mode: str = "train",
           forward: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """The N-FGSM training example ``x'`` (L-inf): uniform noise ``U(-k eps, k eps)`` (kept inside [0, 1]), one
    signed gradient step of ``alpha = step_ratio * eps`` taken at ``x + eta``, no projection (``clip_ratio=None``)
    or a clip of the perturbation to ``[-c eps, c eps]``, then ``x'`` clipped to [0, 1].

    ``y`` may be class indices or class probabilities (the ``ce`` objective takes both). Gradients are taken with
    respect to the input only, parameters frozen and BatchNorm in ``bn_mode`` (:func:`atkit.attacks.attack_mode`);
    ``forward`` replaces ``model(x)`` (e.g. merged dummy-class logits).
    """
    check_budget(eps, step_ratio * eps, 1, "linf")
    if loss not in ATTACK_OBJECTIVES:
        raise unknown_name_error("attack loss", loss, ATTACK_OBJECTIVES)
    if loss != "ce":  # the label-free objectives need clean logits, which N-FGSM (a CE attack) never computes
        raise ConfigError(f"n_fgsm attacks the cross-entropy; loss={loss!r} is not accepted")
    if isinstance(model, nn.parallel.DistributedDataParallel):  # attack passes never enter DDP's reducer
        model = model.module
    fwd = forward if forward is not None else model
    x = x.detach()
    with attack_mode(model, bn_mode):
        eta = torch.empty_like(x).uniform_(-noise_ratio * eps, noise_ratio * eps)
        eta = ((x + eta).clamp(0.0, 1.0) - x).requires_grad_(True)
        objective = ATTACK_OBJECTIVES[loss](fwd(x + eta), y, None).sum()
        (grad,) = torch.autograd.grad(objective, eta)
        with torch.no_grad():
            delta = eta + step_ratio * eps * grad.sign()
            if clip_ratio is not None:
                delta = delta.clamp(-clip_ratio * eps, clip_ratio * eps)
            x_adv = (x + delta).clamp(0.0, 1.0)
    return x_adv.detach()


@dataclass
class NFGSMParams(Params):
    noise_ratio: float = field(default=2.0, metadata={
        "help": "k: noise eta ~ U(-k eps, k eps) (2 in de Jorge et al. 2022, released --unif 2)", "range": (0.0, None)})
    step_ratio: float = field(default=1.0, metadata={
        "help": "step size alpha as a multiple of eps (1: alpha = eps, de Jorge et al. 2022)", "range": (0.0, None)})
    clip_ratio: Optional[float] = field(default=None, metadata={
        "help": "None: no projection (the paper); c: clip the perturbation to [-c eps, c eps] (released --clip)",
        "range": (0.0, None)})


@register
class NFGSM(PGDAT):
    """``CE(z(x'), y)`` with ``x' = clip(x + eta + alpha sign(grad))``, ``eta ~ U(-k eps, k eps)``, no projection
    (see the module docstring)."""

    name = "n_fgsm"
    paper = ("de Jorge et al., NeurIPS 2022, arXiv:2202.01181 (N-FGSM: noise k = 2, alpha = eps, no clipping); "
             "docs/methods.md, fast adversarial training")
    Params = NFGSMParams
    default_bn_mode = "train"
    default_random_start = "uniform"
    single_step = True

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        if self.threat.norm != "linf":
            raise ConfigError(f"n_fgsm is defined for the L-inf threat model (de Jorge et al. 2022); got "
                              f"norm={self.threat.norm!r} (use fgsm_rs or pgd_at under l2)")
        if self.params.random_start is not None:
            raise ConfigError(f"n_fgsm.random_start={self.params.random_start!r} does not apply: N-FGSM draws its own "
                              "noise (noise_ratio; 0 removes it)")

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> Tensor:
        """:func:`n_fgsm` with the method's ``k``, ``alpha``, clip and BatchNorm mode."""
        kwargs: dict[str, Any] = dict(eps=self.threat.eps, noise_ratio=self.params.noise_ratio,
                                      step_ratio=self.params.step_ratio, clip_ratio=self.params.clip_ratio,
                                      bn_mode=self.bn_mode)
        kwargs.update(overrides)
        return n_fgsm(model, x, y, **kwargs)

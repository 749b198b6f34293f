"""Projected gradient descent (Madry et al. 2018) under the L-inf and L2 threat models."""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..core.utils import ConfigError, check_choice, unknown_name_error
from .losses import ATTACK_OBJECTIVES, NEEDS_CLEAN_LOGITS, AttackLoss
from .mode import attack_mode

NORMS = ("linf", "l2")
RANDOM_STARTS = ("uniform", "normal", None)


def check_budget(eps: float, step_size: float | None, steps: int | None, norm: str) -> None:
    """Reject budgets that are negative, or in pixel units by mistake (``8`` instead of ``8/255``)."""
    check_choice("norm", norm, NORMS)
    limit = 1.0 if norm == "linf" else 64.0
    if not (isinstance(eps, (int, float)) and math.isfinite(eps)) or eps < 0 or eps > limit:
        hint = f" (did you mean {eps}/255 = {eps / 255:.5f}?)" if eps > limit and norm == "linf" else ""
        raise ConfigError(
            f"eps={eps!r} is out of range for norm {norm!r}: images are in [0,1], so eps must be in "
            f"[0, {limit:g}]{hint}."
        )
    if step_size is not None and (not math.isfinite(step_size) or step_size < 0 or step_size > limit):
        hint = f" (did you mean {step_size}/255?)" if step_size > limit else ""
        raise ConfigError(f"step_size={step_size!r} is out of range: it must be in [0, {limit:g}]{hint}.")
    if steps is not None and (int(steps) != steps or steps < 0):
        raise ConfigError(f"steps={steps!r} must be a non-negative integer.")


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def random_start_delta(x: Tensor, eps: float, norm: str, kind: str | None) -> Tensor:
    """Initial perturbation: uniform in the eps-ball, ``0.001*N(0,1)`` (TRADES/MART code), or zero."""
    if kind is None or eps == 0:
        return torch.zeros_like(x)
    if kind == "normal":
        return 0.001 * torch.randn_like(x)
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
    direction = torch.randn_like(x)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    d = x[0].numel()
    radius = eps * torch.rand(x.shape[0], device=x.device, dtype=x.dtype).pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project a perturbation back onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def _resolve_objective(loss: Union[str, AttackLoss]) -> tuple[AttackLoss, bool]:
    if callable(loss):
        return loss, bool(getattr(loss, "needs_clean_logits", False))
    if loss not in ATTACK_OBJECTIVES:
        raise unknown_name_error("attack loss", loss, ATTACK_OBJECTIVES)
    return ATTACK_OBJECTIVES[loss], loss in NEEDS_CLEAN_LOGITS


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    loss: Union[str, AttackLoss] = "ce",
    random_start: Optional[str] = "uniform",
    targeted: bool = False,
    bn_mode: str = "eval",
    return_iterate_at: Optional[int] = None,
    clean_logits: Optional[Tensor] = None,
    forward: Optional[Callable[[Tensor], Tensor]] = None,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Untargeted (or targeted) PGD; returns the adversarial images ``x' = x + delta``.

    Each step ``delta <- Proj_eps(delta + step_size * g)`` with ``g = sign(grad)`` (L-inf) or the
    per-sample unit-L2 gradient (L2), then ``x + delta`` is clipped to [0, 1]. The objective is a
    name from :data:`ATTACK_OBJECTIVES` (``ce``, ``kl``, ``sq``, ``cw``, ``dlr``) or a callable
    ``(logits, y, clean_logits) -> (B,)``; a callable with attribute ``needs_clean_logits=True``
    gets the clean logits. With ``targeted=True``, ``y`` holds the targets and the attack minimises
    the objective towards them. Gradients are taken with respect to the input only
    (``torch.autograd.grad``), parameters are frozen, and the model's mode is set by ``bn_mode``
    and restored afterwards (:func:`attack_mode`). With ``return_iterate_at=I`` the iterate after
    step ``I`` is returned too (FAIT's ``x*``, FAIT/MER paper); ``I = 0`` is the starting point.
    ``forward`` replaces ``model(x)`` (e.g. mixed-precision forwards); it must call ``model``.
    """
    check_budget(eps, step_size, steps, norm)
    check_choice("random_start", random_start, RANDOM_STARTS)
    if return_iterate_at is not None and not 0 <= return_iterate_at <= steps:
        raise ConfigError(f"return_iterate_at={return_iterate_at} must be in [0, steps={steps}].")
    objective, needs_clean = _resolve_objective(loss)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        # Attack passes never enter DDP: its gradient reducer expects a parameter backward after a forward.
        model = model.module
    fwd = forward if forward is not None else model
    x = x.detach()
    sign = -1.0 if targeted else 1.0
    with attack_mode(model, bn_mode):
        if needs_clean and clean_logits is None:
            with torch.no_grad():
                clean_logits = fwd(x)
        if clean_logits is not None:
            clean_logits = clean_logits.detach()
        delta = random_start_delta(x, eps, norm, random_start)
        delta = (x + delta).clamp(0.0, 1.0) - x
        x_iter = x + delta if return_iterate_at == 0 else None
        for i in range(steps):
            delta.requires_grad_(True)
            objective_value = objective(fwd(x + delta), y, clean_logits).sum() * sign
            (grad,) = torch.autograd.grad(objective_value, delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = delta + step_size * grad.sign()
                else:
                    delta = delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)
                delta = project(delta, eps, norm)
                delta = (x + delta).clamp(0.0, 1.0) - x
            if return_iterate_at == i + 1:
                x_iter = x + delta
    x_adv = (x + delta).detach()
    if return_iterate_at is not None:
        return x_adv, x_iter.detach()
    return x_adv

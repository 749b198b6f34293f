"""Uniform random noise in the eps-ball: the 'Random' perturbation of RPAT, Fig. 2."""
from __future__ import annotations

from torch import Tensor

from .pgd import check_budget, random_start_delta


def random_noise(x: Tensor, *, eps: float, norm: str = "linf") -> Tensor:
    """``x + u`` with ``u`` uniform in the eps-ball of ``norm``, clipped to [0, 1]. No model involved."""
    check_budget(eps, None, None, norm)
    return (x + random_start_delta(x, eps, norm, "uniform")).clamp(0.0, 1.0).detach()

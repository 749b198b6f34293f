"""SCORE (Pang et al. 2022) as used in FAIT/MER paper, Sec. 5.3.2: TRADES with the squared error."""
from __future__ import annotations

from dataclasses import dataclass

from .fait import BregmanParams, BregmanTRADES, lam_field
from .registry import register


@dataclass
class SCOREParams(BregmanParams):
    lam: float = lam_field(4.0)


@register
class SCORE(BregmanTRADES):
    """``CE(z(x), y) + lam * sum_k (p_k(x) - p_k(x'))^2`` (batch mean), lam = 4.

    The squared error, the Bregman divergence of ``psi(p) = sum_k p_k^2``, replaces the KL in both
    the attack (PGD on SE from ``x + 0.001 N(0,1)``, BatchNorm in eval mode) and the loss (FAIT/MER paper,
    Sec. 5.3.2, Table 6, "following the implementation of SCORE").
    """

    name = "score"
    Params = SCOREParams
    psi = "square"

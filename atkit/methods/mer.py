"""Maximum entropy regularisation on TRADES (FAIT/MER paper, Sec. 4.2, Eq. 10): TRADES-MER and its ``psi = S`` form."""
from __future__ import annotations

from dataclasses import dataclass

from .fait import BregmanTRADES, EntropyParams, lam_field
from .registry import register


@dataclass
class MERParams(EntropyParams):
    lam: float = lam_field(21.0)


@register
class MER(BregmanTRADES):
    """TRADES-MER: ``CE(z(x), y) + lam * KL(p(x) || p(x')) - (beta_clean H(p(x)) + beta_adv H(p(x')))``.

    ``H(p) = -sum_k p_k log p_k``, averaged over the batch; subtracting it makes training raise the
    entropy. lam = 21, beta_clean = 1, beta_adv = 0 (FAIT/MER paper, Eq. 10, Tables 1 and 3). With both
    betas 0 this is TRADES exactly (same attack, same forwards).
    """

    name = "mer"
    Params = MERParams


@dataclass
class MERSParams(EntropyParams):
    lam: float = lam_field(10.0)


@register
class MERS(BregmanTRADES):
    """TRADES-MER with ``psi = S``: ``SCORE loss - (beta_clean (-S(p(x))) + beta_adv (-S(p(x'))))``, lam = 10.

    ``S(p) = sum_k p_k^2``; the paper maximises ``-S`` in place of ``H`` (FAIT/MER paper, Sec. 5.3.2,
    Table 6), so the loss adds ``beta_clean * mean S(p(x)) + beta_adv * mean S(p(x'))``. The
    attack maximises SE as in SCORE. The paper does not restate the betas for this variant; the
    TRADES-MER choice (1, 0) of Table 3 is the default.
    """

    name = "mer_s"
    Params = MERSParams
    psi = "square"

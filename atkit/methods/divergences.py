"""Divergences between predictions shared by several losses (each a per-sample or batch-mean value)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_per_sample(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """``KL(softmax(p) || softmax(q)) = sum_k p_k (log p_k - log q_k)`` for each row, shape ``(B,)``."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def js_with_temperature(logits_1: Tensor, logits_2: Tensor, temperature: float = 0.5,
                        m_floor: float = 1e-8) -> Tensor:
    """Jensen-Shannon divergence of tempered softmaxes, batch mean (Consistency-AT, Tack et al. 2022).

    ``p_i = softmax(z_i / T)``, ``M = clamp((p_1 + p_2)/2, min=m_floor)``,
    ``JS = 1/2 (KL(p_1 || M) + KL(p_2 || M))`` averaged over the batch (docs/methods.md, baselines).
    """
    p1 = F.softmax(logits_1 / temperature, dim=1)
    p2 = F.softmax(logits_2 / temperature, dim=1)
    log_m = ((p1 + p2) / 2).clamp_min(m_floor).log()
    # xlogy gives 0 * log 0 = 0 for classes a tempered softmax underflows to zero.
    kl_1 = (torch.xlogy(p1, p1) - p1 * log_m).sum(dim=1)
    kl_2 = (torch.xlogy(p2, p2) - p2 * log_m).sum(dim=1)
    return (0.5 * (kl_1 + kl_2)).mean()


def squared_error_per_sample(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """``sum_k (p_k - q_k)^2`` of the two softmaxes for each row, shape ``(B,)``.

    The Bregman divergence of ``psi(p) = sum_k p_k^2`` (SCORE, Pang et al. 2022; FAIT/MER paper, Sec. 5.3.2).
    """
    return (F.softmax(p_logits, dim=1) - F.softmax(q_logits, dim=1)).pow(2).sum(dim=1)


def entropy_per_sample(logits: Tensor) -> Tensor:
    """Shannon entropy ``H(p) = -sum_k p_k log p_k`` of ``p = softmax(logits)`` for each row, shape ``(B,)``."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def neg_sum_of_squares_per_sample(logits: Tensor) -> Tensor:
    """``-S(p) = -sum_k p_k^2`` of ``p = softmax(logits)`` for each row, shape ``(B,)``.

    The quantity MER maximises when ``psi = S`` (FAIT/MER paper, Sec. 5.3.2), as ``H = -psi`` for ``psi = -H``.
    """
    return -F.softmax(logits, dim=1).pow(2).sum(dim=1)

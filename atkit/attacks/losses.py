"""Per-sample objectives that attacks maximise.

Each takes ``(logits, y, clean_logits)`` and returns a ``(B,)`` tensor; larger means more
adversarial (for an untargeted attack). ``clean_logits`` is needed only by the divergence
objectives and is treated as a constant.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor

AttackLoss = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def ce_objective(logits: Tensor, y: Tensor, clean_logits: Tensor | None = None) -> Tensor:
    """Cross-entropy ``-log p_y(x')`` (Madry et al. 2018)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def kl_objective(logits: Tensor, y: Tensor, clean_logits: Tensor | None) -> Tensor:
    """``KL(p(x) || p(x'))`` summed over classes: the TRADES inner maximisation (Zhang et al. 2019, eq. 5)."""
    if clean_logits is None:
        raise ValueError("the 'kl' attack objective needs clean_logits")
    log_p_clean = F.log_softmax(clean_logits.float(), dim=1)
    log_p_adv = F.log_softmax(logits.float(), dim=1)
    return (log_p_clean.exp() * (log_p_clean - log_p_adv)).sum(dim=1)


def squared_error_objective(logits: Tensor, y: Tensor, clean_logits: Tensor | None) -> Tensor:
    """``sum_k (p_k(x) - p_k(x'))^2``: the SCORE attack, psi = S in the FAIT/MER paper."""
    if clean_logits is None:
        raise ValueError("the 'sq' attack objective needs clean_logits")
    p_clean = F.softmax(clean_logits.float(), dim=1)
    p_adv = F.softmax(logits.float(), dim=1)
    return (p_clean - p_adv).pow(2).sum(dim=1)


def _max_other(logits: Tensor, y: Tensor) -> Tensor:
    true_mask = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(true_mask, float("-inf")).amax(dim=1)


def cw_objective(logits: Tensor, y: Tensor, clean_logits: Tensor | None = None) -> Tensor:
    """CW margin ``max_{k != y} z_k - z_y`` (Carlini & Wagner 2017), used as an L-inf PGD loss."""
    logits = logits.float()
    return _max_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_objective(logits: Tensor, y: Tensor, clean_logits: Tensor | None = None) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, eq. 6):
    ``-(z_y - max_{k != y} z_k) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi`` the sorted logits."""
    logits = logits.float()
    if logits.shape[1] < 3:
        raise ValueError("the DLR objective needs at least 3 classes")
    top = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - _max_other(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)


ATTACK_OBJECTIVES: dict[str, AttackLoss] = {
    "ce": ce_objective,
    "kl": kl_objective,
    "sq": squared_error_objective,
    "cw": cw_objective,
    "dlr": dlr_objective,
}
# Objectives measured against the clean prediction rather than the label.
NEEDS_CLEAN_LOGITS = {"kl", "sq"}

"""Fast gradient sign method (Goodfellow et al. 2015): one full-size signed step."""
from __future__ import annotations

from typing import Optional, Union

import torch.nn as nn
from torch import Tensor

from .losses import AttackLoss
from .pgd import pgd


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: Union[str, AttackLoss] = "ce",
    targeted: bool = False,
    bn_mode: str = "eval",
    random_start: Optional[str] = None,
) -> Tensor:
    """``x' = clip(x + eps * sign(grad_x loss))``; PGD with one step of size eps and no random start."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, norm=norm, loss=loss,
               random_start=random_start, targeted=targeted, bn_mode=bn_mode)

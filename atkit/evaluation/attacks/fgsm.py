"""``fgsm``: one signed gradient step of size eps (Goodfellow et al. 2015, arXiv:1412.6572)."""
from __future__ import annotations

from torch import Tensor

from ...attacks import fgsm
from ..attack import EvalAttack, register_eval_attack
from ..target import AttackTarget


@register_eval_attack
class FGSM(EvalAttack):
    """``x' = clip_[0,1](x + eps sign(grad_x CE(f(x), y)))`` (L2: a step of length eps along the gradient),
    BatchNorm in eval mode (Goodfellow et al. 2015, arXiv:1412.6572). A weak probe, not a robust-accuracy
    attack: it never enters the worst case behind robust accuracy."""

    name = "fgsm"
    paper = "Goodfellow et al. 2015, arXiv:1412.6572"
    robust = False

    def display_name(self) -> str:
        return "FGSM"

    def describe(self, threat: dict) -> dict:
        return {"attack": "fgsm", "norm": threat["norm"], "eps": threat["eps"], "bn_mode": "eval"}

    def passes_per_image(self) -> tuple[int, int]:
        return 1, 1

    def perturb(self, target: AttackTarget, x: Tensor, y: Tensor) -> Tensor:
        return fgsm(target.model, x, y, eps=target.threat["eps"], norm=target.threat["norm"], bn_mode="eval")

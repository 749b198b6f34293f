"""``random``: uniform noise in the eps-ball (the baseline of RPAT, Fig. 2)."""
from __future__ import annotations

from torch import Tensor

from ...attacks import random_noise
from ..attack import EvalAttack, register_eval_attack
from ..target import AttackTarget


@register_eval_attack
class RandomNoise(EvalAttack):
    """``x' = clip_[0,1](x + delta)``, ``delta`` uniform in the eps-ball (L2: uniform in the ball's volume). Not an
    attack on the model, so not a robust-accuracy attack: it measures how far noise alone moves the prediction."""

    name = "random"
    paper = "uniform noise in the threat model's ball"
    robust = False
    adversarial = False

    def display_name(self) -> str:
        return "Random"

    def describe(self, threat: dict) -> dict:
        return {"attack": "random", "norm": threat.get("norm"), "eps": threat.get("eps")}

    def perturb(self, target: AttackTarget, x: Tensor, y: Tensor) -> Tensor:
        return random_noise(x, eps=target.threat["eps"], norm=target.threat["norm"])

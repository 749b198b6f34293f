"""``clean``: no attack, the images as they are."""
from __future__ import annotations

from torch import Tensor

from ..attack import EvalAttack, register_eval_attack
from ..target import AttackTarget


@register_eval_attack
class Clean(EvalAttack):
    """The clean images: accuracy without an attack (not a robust-accuracy attack)."""

    name = "clean"
    paper = "no attack"
    robust = False
    adversarial = False

    def display_name(self) -> str:
        return "Clean"

    def describe(self, threat: dict) -> dict:
        return {"attack": "clean"}

    def perturb(self, target: AttackTarget, x: Tensor, y: Tensor) -> Tensor:
        return x

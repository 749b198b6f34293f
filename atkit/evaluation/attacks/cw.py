"""``cw`` / ``cwN``: PGD on the Carlini-Wagner margin (Carlini & Wagner 2017, arXiv:1608.04644)."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...attacks import pgd
from ..attack import EvalAttack, register_eval_attack
from ..target import AttackTarget


@dataclass
class CWParams:
    steps: int = field(default=30, metadata={"help": "iterations (the N of cwN; 30 as in the papers)",
                                             "range": (1, None)})


@register_eval_attack
class CW(EvalAttack):
    """PGD on the CW margin ``max_{k != y} z_k - z_y`` (Carlini & Wagner 2017, arXiv:1608.04644, their loss f_6)
    within the same eps-ball as PGD (uniform start, the threat model's step size, 30 steps by default). The
    released code of one of the papers runs CW without an eps bound; that is not copied (docs/methods.md,
    common protocol)."""

    name = "cw"
    paper = "Carlini & Wagner 2017, arXiv:1608.04644 (margin loss), in the eps-ball"
    Params = CWParams
    suffix = "steps"
    margin = True
    strength = 9.0

    smoke_settings = {"steps": 3}

    def display_name(self) -> str:
        return f"CW-{self.params.steps}"

    def short_name(self) -> str:
        return "CW" if not self.changed_settings() else self.display_name()

    def describe(self, threat: dict) -> dict:
        return {"attack": "pgd", "loss": "cw", "steps": self.params.steps, "step_size": threat["step_size"],
                "random_start": "uniform", "bn_mode": "eval", "norm": threat.get("norm"), "eps": threat.get("eps")}

    def passes_per_image(self) -> tuple[int, int]:
        return self.params.steps, self.params.steps

    def perturb(self, target: AttackTarget, x: Tensor, y: Tensor) -> Tensor:
        t = target.threat
        return pgd(target.model, x, y, eps=t["eps"], step_size=t["step_size"], steps=self.params.steps,
                   norm=t["norm"], loss="cw", random_start="uniform", bn_mode="eval")

"""``pgdN``: projected gradient descent on the cross-entropy (Madry et al. 2018, arXiv:1706.06083)."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...attacks import pgd
from ..attack import EvalAttack, register_eval_attack
from ..target import AttackTarget


@dataclass
class PGDParams:
    steps: int = field(default=20, metadata={"help": "iterations (the N of pgdN)", "range": (1, None)})
    random_start: str = field(default="uniform", metadata={
        "help": "start: 'uniform' in the eps-ball, 'normal' = x + 0.001 N(0, 1), or 'none' (the clean image)",
        "choices": ("uniform", "normal", "none")})


@register_eval_attack
class PGD(EvalAttack):
    """PGD-N on the cross-entropy: ``x_{t+1} = Proj_{B(x, eps)}(x_t + alpha sign(grad_x CE(f(x_t), y)))``
    (L-inf; L2 steps along the normalised gradient), ``alpha`` the threat model's step size, a uniform random
    start in the ball, BatchNorm in eval mode; the last iterate is scored (Madry et al. 2018, arXiv:1706.06083;
    the papers' PGD-10/20/100, docs/methods.md, common protocol)."""

    name = "pgd"
    paper = "Madry et al. 2018, arXiv:1706.06083"
    Params = PGDParams
    suffix = "steps"
    suffix_required = True
    strength = 10.0

    smoke_settings = {"steps": 3}

    def display_name(self) -> str:
        start = "" if self.params.random_start == "uniform" else f", start {self.params.random_start}"
        return f"PGD-{self.params.steps}{start}"

    def describe(self, threat: dict) -> dict:
        return {"attack": "pgd", "loss": "ce", "steps": self.params.steps, "step_size": threat["step_size"],
                "random_start": self.params.random_start, "bn_mode": "eval", "norm": threat["norm"],
                "eps": threat["eps"]}

    def passes_per_image(self) -> tuple[int, int]:
        return self.params.steps, self.params.steps

    def perturb(self, target: AttackTarget, x: Tensor, y: Tensor) -> Tensor:
        t = target.threat
        start = None if self.params.random_start == "none" else self.params.random_start
        return pgd(target.model, x, y, eps=t["eps"], step_size=t["step_size"], steps=self.params.steps,
                   norm=t["norm"], loss="ce", random_start=start, bn_mode="eval")

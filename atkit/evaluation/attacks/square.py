"""``square``: the Square attack, gradient-free (Andriushchenko et al. 2020, arXiv:1912.00049)."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..attack import EvalAttack, WholeSetRun, register_eval_attack
from ..target import AttackTarget
from .aa import run_official


@dataclass
class SquareParams:
    n_queries: int = field(default=5000, metadata={"help": "queries per image (5000 in AutoAttack standard)",
                                                   "range": (1, None)})


@register_eval_attack
class Square(EvalAttack):
    """Square (Andriushchenko et al. 2020, arXiv:1912.00049): random search over square-shaped updates at the
    boundary of the eps-ball, accepting an update when it lowers the margin ``z_y - max_{i != y} z_i``; it uses
    no gradient, so masked gradients cannot stop it (the black-box sanity check runs it). The official
    ``pyautoattack`` implementation, one restart."""

    name = "square"
    paper = "Andriushchenko et al. 2020, arXiv:1912.00049 (official pyautoattack)"
    Params = SquareParams
    strength = 50.0
    margin = True
    whole_set = True
    scored_view = True

    smoke_settings = {"n_queries": 50}

    def display_name(self) -> str:
        return f"Square-{self.params.n_queries}"

    def describe(self, threat: dict) -> dict:
        return {"attack": "autoattack", "version": "custom", "attacks": ["square"], **self.settings(),
                "norm": threat.get("norm"), "eps": threat.get("eps")}

    def passes_per_image(self) -> tuple[int, int]:
        return self.params.n_queries, 0  # an upper bound: a broken image stops querying

    def run_whole(self, target: AttackTarget, x: Tensor, y: Tensor) -> WholeSetRun:
        return run_official(self, target, x, y, version="custom", attacks=["square"],
                            square_queries=self.params.n_queries)

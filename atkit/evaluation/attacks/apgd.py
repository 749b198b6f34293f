"""``apgd``: APGD-CE then APGD-DLR, the first two attacks of AutoAttack (Croce & Hein 2020, arXiv:2003.01690)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor

from ..attack import EvalAttack, WholeSetRun, register_eval_attack
from ..target import AttackTarget
from .aa import run_official


@dataclass
class APGDParams:
    n_restarts: int = field(default=1, metadata={"help": "restarts of each of the two attacks", "range": (1, None)})
    n_iter: Optional[int] = field(default=None, metadata={"help": "iterations (None: the official 100)",
                                                          "range": (1, None)})


@register_eval_attack
class APGD(EvalAttack):
    """APGD-CE, then APGD-DLR on the points it left (Croce & Hein 2020, arXiv:2003.01690): step-size-free PGD
    with momentum on the cross-entropy and on the difference-of-logits ratio
    ``DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, one restart each by default. A cheaper subset of
    AutoAttack ``standard``, reported as "APGD-CE+DLR", never as AutoAttack."""

    name = "apgd"
    paper = "Croce & Hein 2020, arXiv:2003.01690 (official pyautoattack, APGD-CE + APGD-DLR)"
    Params = APGDParams
    strength = 90.0
    margin = True
    whole_set = True
    scored_view = True

    smoke_settings = {"n_iter": 5}

    def short_name(self) -> str:
        return "APGD" if not self.changed_settings() else self.display_name()

    def display_name(self) -> str:
        changed = self.changed_settings()
        return "APGD-CE+DLR" + ("" if not changed else " (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
                                + ")")

    def describe(self, threat: dict) -> dict:
        return {"attack": "autoattack", "version": "custom", "attacks": ["apgd-ce", "apgd-dlr"], **self.settings(),
                "norm": threat.get("norm"), "eps": threat.get("eps")}

    def passes_per_image(self) -> tuple[int, int]:
        steps = (self.params.n_iter or 100) * self.params.n_restarts
        return 2 * steps, 2 * steps  # an upper bound: APGD-DLR runs only on the points APGD-CE left

    def run_whole(self, target: AttackTarget, x: Tensor, y: Tensor) -> WholeSetRun:
        return run_official(self, target, x, y, version="custom", attacks=["apgd-ce", "apgd-dlr"],
                            n_restarts=self.params.n_restarts, n_iter=self.params.n_iter)

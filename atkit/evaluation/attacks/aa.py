"""``aa``: AutoAttack ``standard`` through the official code (Croce & Hein 2020, arXiv:2003.01690)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor

from ...core.utils import unknown_name_error
from ..attack import EvalAttack, WholeSetRun, register_eval_attack
from ..autoattack import AA_ATTACKS, STANDARD_ATTACKS, run_autoattack
from ..target import AttackTarget


@dataclass
class AutoAttackParams:
    attacks: Optional[list[str]] = field(default=None, metadata={
        "help": "None: the standard four (APGD-CE, APGD-T, FAB-T, Square); else a custom list of "
                f"{', '.join(AA_ATTACKS)} run in that order (then not 'AutoAttack standard')"})
    n_iter: Optional[int] = field(default=None, metadata={
        "help": "APGD/FAB iterations (None: the official 100); any value makes it not 'AutoAttack standard'",
        "range": (1, None)})
    n_restarts: Optional[int] = field(default=None, metadata={
        "help": "restarts of each attack (None: the official ones); any value makes it not 'standard'",
        "range": (1, None)})
    square_queries: Optional[int] = field(default=None, metadata={
        "help": "Square's queries (None: the official 5000); any value makes it not 'standard'",
        "range": (1, None)})


def driver_options(params: Any) -> dict[str, Any]:
    return {"n_iter": params.n_iter, "n_restarts": params.n_restarts, "square_queries": params.square_queries}


def run_official(attack: EvalAttack, target: AttackTarget, x: Tensor, y: Tensor, **options: Any) -> WholeSetRun:
    """Run the official attacks through :func:`atkit.evaluation.autoattack.run_autoattack` on the scored view."""
    result = run_autoattack(target.scored, x, y, eps=target.threat["eps"], norm=target.threat["norm"],
                            batch_size=target.batch_size, state_path=target.state_path, seed=target.seed,
                            device=target.device, on_batch=target.on_progress, on_stage=target.on_stage,
                            **options)
    info: dict[str, Any] = {"per_attack": result.per_attack, "resumed": result.resumed, "ran_now": result.ran_now,
                            "budget": result.budget}
    if "skipped" in result.config:
        info["skipped"] = result.config["skipped"]
    return WholeSetRun(result.x_adv, info, list(result.warnings))


@register_eval_attack
class AutoAttack(EvalAttack):
    """AutoAttack ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries), each
    on the points the earlier ones left, a point broken once any of them succeeds (Croce & Hein 2020,
    arXiv:2003.01690), with the official ``pyautoattack`` objects; atkit's driver adds exact resume
    (:mod:`atkit.evaluation.autoattack`). A robust ResNet-18 costs about 3,968 forward and 997 backward passes
    per test image (RobustBench's accounting); the evaluation records the passes it made."""

    name = "aa"
    paper = "Croce & Hein 2020, arXiv:2003.01690 (official pyautoattack)"
    Params = AutoAttackParams
    strength = 100.0
    margin = True
    whole_set = True
    scored_view = True

    smoke_settings = {"n_iter": 5, "n_restarts": 1, "square_queries": 50}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        for name in self.params.attacks or []:
            if name not in AA_ATTACKS:
                raise unknown_name_error("AutoAttack attack", name, AA_ATTACKS)

    def short_name(self) -> str:
        return "AA" if not self.changed_settings() else self.display_name()

    def display_name(self) -> str:
        changed = self.changed_settings()
        if not changed:
            return "AutoAttack"
        shown = {k: ("+".join(v) if k == "attacks" else v) for k, v in changed.items()}
        return "AutoAttack (" + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) + "; not standard)"

    def describe(self, threat: dict) -> dict:
        custom = self.params.attacks is not None
        return {"attack": "autoattack",
                "version": "custom" if custom else ("standard" if not self.changed_settings() else "standard-reduced"),
                **self.settings(), "attacks": list(self.params.attacks or STANDARD_ATTACKS),
                "norm": threat.get("norm"), "eps": threat.get("eps")}

    def passes_per_image(self) -> Optional[tuple[int, int]]:
        if not self.changed_settings():
            return 3968, 997  # a robust ResNet-18 under standard AutoAttack (RobustBench's accounting)
        return None

    def run_whole(self, target: AttackTarget, x: Tensor, y: Tensor) -> WholeSetRun:
        if self.params.attacks is not None:
            return run_official(self, target, x, y, version="custom", attacks=list(self.params.attacks),
                                **driver_options(self.params))
        return run_official(self, target, x, y, version="standard", **driver_options(self.params))

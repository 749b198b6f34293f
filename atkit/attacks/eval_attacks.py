"""Evaluation attacks by name: one grammar, one registry, and which of them count as robust.

Names (docs/methods.md, common protocol, "evaluation attacks"): ``clean``; ``pgdN`` (PGD-N on the
cross-entropy, N >= 1 written without leading zeros: ``pgd20``, not ``pgd020``); ``cw`` (PGD-30 on the CW margin)
and ``cwN``; ``aa`` (AutoAttack standard); ``apgd`` (APGD-CE then APGD-DLR, one restart each); ``fgsm``; ``random``.
Each family is registered in :data:`EVAL_ATTACKS` (:class:`atkit.registry.Registry`); a family whose factory takes
``steps`` accepts the ``<family>N`` spelling (``steps`` without a default: only that spelling). Both
``RunConfig`` validation (``eval.final_attacks``) and :func:`atkit.evaluate.evaluate` read names through
:func:`parse_eval_attack`, so a name is accepted by one exactly when it is accepted by the other.

The robust metric (docs/methods.md, common protocol): with per-sample results, the robust accuracy behind
Mean/NRR is the per-sample worst case over every robust attack that ran (:func:`robust_attacks`, named by
:func:`worst_case_name`); from accuracies alone (epoch metrics, tables) it is the strongest single one
(:func:`robust_metric`). ``Mean = (Clean + R)/2`` and ``NRR = 2 Clean R/(Clean + R)`` (:func:`trade_off_scores`).
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from ..registry import REQUIRED, Registry
from ..utils import ConfigError, unknown_name_error
from .autoattack import AA_PRESETS

CW_DEFAULT_STEPS = 30
# Step counts shown (and suggested for near misses such as "pgd-20") for a family that needs one.
_EXAMPLE_STEPS = (10, 20, 100)


@dataclass(frozen=True)
class EvalAttack:
    """What an evaluation attack name runs: ``kind`` (``clean``, ``pgd``, ``fgsm``, ``random``, ``aa``, ``apgd``),
    the PGD ``loss`` (``ce`` / ``cw``) and ``steps``, the AutoAttack ``preset`` (:data:`AA_PRESETS`), and whether
    it counts as a ``robust`` accuracy attack."""

    kind: str
    loss: Optional[str] = None
    steps: Optional[int] = None
    robust: bool = False
    preset: Optional[str] = None

    @property
    def margin(self) -> bool:
        """A margin-loss attack (CW, or APGD whose second stage is APGD-DLR), not cross-entropy only."""
        return self.loss == "cw" or self.kind == "apgd"

    def details(self, threat: dict[str, Any]) -> dict[str, Any]:
        """The settings recorded beside the attack's accuracy (``EvalResult.details``)."""
        if self.kind == "pgd":
            return {"attack": "pgd", "loss": self.loss, "steps": self.steps, "step_size": threat["step_size"],
                    "random_start": "uniform", "bn_mode": "eval"}
        if self.kind == "fgsm":
            return {"attack": "fgsm", "step_size": threat["eps"]}
        if self.preset is not None:
            return {"attack": "autoattack", **copy.deepcopy(AA_PRESETS[self.preset])}
        return {"attack": self.kind}


EVAL_ATTACKS = Registry("evaluation attack")


@EVAL_ATTACKS.register("clean")
def clean_images() -> EvalAttack:
    """No attack: the clean images."""
    return EvalAttack("clean")


@EVAL_ATTACKS.register("pgd")
def pgd_ce(steps: int) -> EvalAttack:
    """``pgdN``: PGD-N on the cross-entropy, uniform random start in the eps-ball, BatchNorm in eval mode."""
    return EvalAttack("pgd", loss="ce", steps=steps, robust=True)


@EVAL_ATTACKS.register("cw")
def pgd_cw(steps: int = CW_DEFAULT_STEPS) -> EvalAttack:
    """``cw`` / ``cwN``: PGD on the CW margin ``max_{k != y} z_k - z_y`` within the eps-ball (30 steps by default;
    the released code of one of the papers runs CW without an eps bound; not copied)."""
    return EvalAttack("pgd", loss="cw", steps=steps, robust=True)


@EVAL_ATTACKS.register("aa")
def autoattack_standard() -> EvalAttack:
    """AutoAttack ``standard`` with the official code (preset ``standard`` of :data:`AA_PRESETS`)."""
    return EvalAttack("aa", robust=True, preset="standard")


@EVAL_ATTACKS.register("apgd")
def autoattack_apgd() -> EvalAttack:
    """A cheaper AutoAttack subset: APGD-CE then APGD-DLR, one restart each (preset ``apgd``)."""
    return EvalAttack("apgd", robust=True, preset="apgd")


@EVAL_ATTACKS.register("fgsm")
def fgsm_step() -> EvalAttack:
    """One signed gradient step of size eps (not a robust-accuracy attack)."""
    return EvalAttack("fgsm")


@EVAL_ATTACKS.register("random")
def random_point() -> EvalAttack:
    """Uniform noise in the eps-ball (not a robust-accuracy attack)."""
    return EvalAttack("random")


def _steps_option(family: str) -> Any:
    """The ``steps`` default of a family's factory: :data:`REQUIRED`, a number, or None (takes no steps)."""
    return EVAL_ATTACKS.options(family).get("steps")


def eval_attack_names() -> list[str]:
    """The accepted spellings, for messages: ``clean``, ``pgd10``, ``pgd20``, ``pgd100``, ``pgdN``, ``cw``, ..."""
    names: list[str] = []
    for family in EVAL_ATTACKS:
        steps = _steps_option(family)
        if steps is None:
            names.append(family)
        elif steps is REQUIRED:
            names += [f"{family}{n}" for n in _EXAMPLE_STEPS] + [f"{family}N"]
        else:
            names += [family, f"{family}N"]
    return names


def parse_eval_attack(name: Any) -> EvalAttack:
    """Attack name -> what to run (:class:`EvalAttack`): a registered family (``clean``, ``cw``, ...) or
    ``<family>N`` for a family that takes steps (``pgd20``, ``cw50``; N >= 1 without leading zeros).
    Anything else is a :class:`ConfigError` naming it and the accepted names."""
    if not isinstance(name, str):
        raise ConfigError(f"attack names must be strings; got {name!r}. Accepted: {', '.join(eval_attack_names())}.")
    if name in EVAL_ATTACKS and _steps_option(name) is not REQUIRED:
        return EVAL_ATTACKS[name]()
    match = re.fullmatch(r"([a-z_]+?)([1-9][0-9]*)", name)
    if match and match.group(1) in EVAL_ATTACKS and _steps_option(match.group(1)) is not None:
        return EVAL_ATTACKS[match.group(1)](steps=int(match.group(2)))
    raise unknown_name_error("evaluation attack", name, eval_attack_names())


def _parsed(name: str) -> Optional[EvalAttack]:
    try:
        return parse_eval_attack(name)
    except ConfigError:
        return None


def robust_attacks(names: Sequence[str]) -> list[str]:
    """The robust attacks among ``names``, in their order: ``pgdN``, ``cw``/``cwN``, ``apgd``, ``aa``
    (``clean``, ``fgsm`` and ``random`` are not robust-accuracy attacks; other names, e.g. ``mean``, are skipped)."""
    return [n for n in names if (spec := _parsed(n)) is not None and spec.robust]


def is_margin_attack(name: str) -> bool:
    """CW (margin loss) and APGD (APGD-CE then APGD-DLR) attacks: not cross-entropy only."""
    spec = _parsed(name)
    return spec is not None and spec.margin


def worst_case_name(attacks: Sequence[str]) -> Optional[str]:
    """``"aa"`` for one attack, ``"worst of pgd20, cw"`` for several, None for none."""
    if not attacks:
        return None
    return attacks[0] if len(attacks) == 1 else "worst of " + ", ".join(attacks)


def robust_metric(names: Iterable[str]) -> Optional[str]:
    """The strongest single robust accuracy among ``names`` when only accuracies are at hand (epoch metrics,
    tables): ``aa``, else ``apgd``, else the PGD-CE with most steps (None if none). With per-sample results the
    robust accuracy is the worst case over :func:`robust_attacks` instead."""
    names = list(names)
    for name in ("aa", "apgd"):
        if name in names:
            return name
    pgds = [(spec.steps, n) for n in names if (spec := _parsed(n)) is not None and spec.kind == "pgd"
            and spec.loss == "ce"]
    return max(pgds)[1] if pgds else None


def trade_off_scores(clean: Optional[float], robust: Optional[float]) -> tuple[Optional[float], Optional[float]]:
    """``(Mean, NRR)`` of a clean and a robust accuracy in percent: ``Mean = (Clean + R)/2``,
    ``NRR = 2 Clean R/(Clean + R)`` (docs/methods.md, common protocol); None when either is missing or NaN."""
    if clean is None or robust is None or _isnan(clean) or _isnan(robust):
        return None, None
    return (clean + robust) / 2.0, (2.0 * clean * robust / (clean + robust) if clean + robust > 0 else 0.0)


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


ATTACK_NAMES = tuple(eval_attack_names())

__all__ = ["ATTACK_NAMES", "CW_DEFAULT_STEPS", "EVAL_ATTACKS", "EvalAttack", "eval_attack_names", "is_margin_attack",
           "parse_eval_attack", "robust_attacks", "robust_metric", "trade_off_scores", "worst_case_name"]

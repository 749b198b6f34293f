"""Verdicts on a paper's claims, given only on models that learned.

Each motivation notebook ends with checks of the paper's statements on the run it just made ("failure MSE <
success MSE after PGD-AT", "a moderate boundary budget helps clean accuracy", ...). On a model at chance level
(a smoke run, a broken setting) such a comparison is noise, so a verdict needs every model it compares to have
**learned**, which atkit defines as

    clean accuracy >= max(CHANCE_FACTOR * chance, chance + CHANCE_MARGIN)      (percent; chance = 100 / C)

with ``CHANCE_FACTOR = 1.5`` and ``CHANCE_MARGIN = 10`` points, and, when the number ``n`` of test images is
known, the lower end of the 95 % Wilson interval of the clean accuracy above chance (so a handful of lucky
images does not count). The minimum is 20 % for 10 classes, 22.5 % for 8, 11 % for 100 and 75 % for 2. A check
whose models did not all learn is reported as ``agrees = None`` with the verdict
``"not judged: model did not learn (...)"`` naming each model, its accuracy and the minimum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .stats import wilson_interval

CHANCE_FACTOR = 1.5
CHANCE_MARGIN = 10.0
NOT_LEARNED = "not judged: model did not learn"


def learning_minimum(num_classes: int) -> float:
    """The clean accuracy (percent) a model of ``num_classes`` classes needs to count as learned:
    ``max(CHANCE_FACTOR * 100 / C, 100 / C + CHANCE_MARGIN)``, capped at 100."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: a classifier needs at least 2 classes")
    chance = 100.0 / num_classes
    return min(100.0, max(CHANCE_FACTOR * chance, chance + CHANCE_MARGIN))


@dataclass(frozen=True)
class Learned:
    """Whether one model learned (see the module docstring): its clean accuracy against the minimum."""

    name: str
    clean_acc: float
    num_classes: int
    minimum: float
    n: Optional[int] = None
    lower95: Optional[float] = None

    @property
    def chance(self) -> float:
        return 100.0 / self.num_classes

    @property
    def learned(self) -> bool:
        if not math.isfinite(self.clean_acc) or self.clean_acc < self.minimum:
            return False
        return self.lower95 is None or self.lower95 > self.chance

    def describe(self) -> str:
        """``"pgd_at: clean 12.5% (n=48), minimum 22.5% (chance 12.5%)"``."""
        n = f" (n={self.n}, 95% interval from {self.lower95:.1f}%)" if self.lower95 is not None else ""
        return f"{self.name}: clean {self.clean_acc:.1f}%{n}, minimum {self.minimum:.1f}% (chance {self.chance:.1f}%)"


def model_learned(clean_acc: float, num_classes: int, n: Optional[int] = None, name: str = "model") -> Learned:
    """Whether a model with clean accuracy ``clean_acc`` (percent, on ``n`` test images when known) over
    ``num_classes`` classes learned; ``.learned`` is the answer, ``.describe()`` the reason."""
    acc = float(clean_acc) if clean_acc is not None else float("nan")
    lower = None
    if n is not None and math.isfinite(acc):
        lower = 100.0 * wilson_interval(int(round(acc * n / 100.0)), int(n))[0]
    return Learned(name=name, clean_acc=acc, num_classes=int(num_classes), minimum=learning_minimum(num_classes),
                   n=None if n is None else int(n), lower95=lower)


def verdict(agrees: Optional[bool], models: Iterable[Learned]) -> tuple[Optional[bool], str]:
    """``(agrees, text)`` of a check on ``models``: ``(None, "not judged: model did not learn (...)")`` when
    any of them did not learn, else ``agrees`` unchanged with ``"agrees"``, ``"disagrees"`` or
    ``"inconclusive"`` (``agrees is None``: the difference is within the noise, or nothing to compare)."""
    failed = [m for m in models if not m.learned]
    if failed:
        return None, f"{NOT_LEARNED} ({'; '.join(m.describe() for m in failed)})"
    if agrees is None:
        return None, "inconclusive"
    return bool(agrees), "agrees" if agrees else "disagrees"


def judge_check(check: Mapping[str, Any], models: Iterable[Learned], key: str = "agrees") -> dict[str, Any]:
    """A copy of ``check`` (a dict with ``key`` holding True/False/None) with ``key`` replaced by the guarded
    verdict of :func:`verdict` and ``"verdict"`` holding its text."""
    agrees, text = verdict(check.get(key), models)
    return {**check, key: agrees, "verdict": text}


REPRODUCES = "reproduces"
DOES_NOT_REPRODUCE = "does not reproduce"
INCONCLUSIVE = "inconclusive within noise"


def interval_verdict(low: float, high: float, expected: str, models: Iterable[Learned] = ()) -> str:
    """The verdict on a paper's claim about the sign of an effect, from the effect's 95 % interval ``[low, high]``.

    ``expected`` is the paper's sign (``"positive"`` or ``"negative"``). :data:`REPRODUCES` when the whole
    interval lies strictly on the paper's side of zero, :data:`DOES_NOT_REPRODUCE` when it lies strictly on the
    other side, :data:`INCONCLUSIVE` when it contains zero; ``"not judged: model did not learn (...)"`` when one
    of ``models`` did not learn (:func:`model_learned`), whatever the interval.
    """
    if expected not in ("positive", "negative"):
        raise ValueError(f"expected={expected!r}: accepted 'positive', 'negative'")
    if not low <= high:
        raise ValueError(f"interval [{low}, {high}] has its low end above its high end")
    failed = [m for m in models if not m.learned]
    if failed:
        return f"{NOT_LEARNED} ({'; '.join(m.describe() for m in failed)})"
    if low <= 0.0 <= high:
        return INCONCLUSIVE
    above = low > 0.0
    return REPRODUCES if above == (expected == "positive") else DOES_NOT_REPRODUCE


__all__ = ["CHANCE_FACTOR", "CHANCE_MARGIN", "DOES_NOT_REPRODUCE", "INCONCLUSIVE", "Learned", "NOT_LEARNED",
           "REPRODUCES", "interval_verdict", "judge_check", "learning_minimum", "model_learned", "verdict"]

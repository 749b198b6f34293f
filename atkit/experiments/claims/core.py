"""The verdict machinery every claim shares: the learned-model guard, the verdict words, the scale a verdict was
judged at, intervals of accuracy differences, and the rules for published table cells and for two trained networks.

**Learned.** A verdict needs every model it compares to have learned:
``clean accuracy >= max(CHANCE_FACTOR * chance, chance + CHANCE_MARGIN)`` (percent; chance = 100 / C) and, when the
number ``n`` of test images is known, the lower end of its 95 % Wilson interval above chance. Otherwise the verdict
is ``"not judged: model did not learn (...)"``. This guard only refuses noise; it is not a regime: every verdict
also states the accuracy it was judged at (:func:`judged_at`), ``"... at this scale (clean 43.3 %, PGD-20 27.0 %)"``.

**Verdict words** (:class:`ClaimCheck`): :data:`REPRODUCES` (``agrees = True``), :data:`DOES_NOT_REPRODUCE`
(``False``) or :data:`INCONCLUSIVE` (``None``), each followed by ``at this scale (<accuracies>)``; ``"not judged:
..."`` (``None``) when a model did not learn, when there is nothing to compare, or when a run did not save the
per-image data the rule needs (:func:`per_image_data_missing`).

**Published table cells** (:func:`published_difference_verdict`): a directional verdict only where the paper
claims a direction; otherwise whether the published difference lies inside the interval
(:data:`CONSISTENT_WITH_SIZE`) or outside it (:data:`SIZE_EXCLUDED`). **Two trained networks** (one run per arm,
:func:`two_networks_verdict`): :data:`DIFFERS` or :data:`NO_DIFFERENCE`, never a verdict on a method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from statistics import NormalDist
from typing import Any, Iterable, Mapping, Optional, Sequence

from ...core.stats import Z95, newcombe_paired_interval, wilson_interval
from ...core.utils import ConfigError

CHANCE_FACTOR = 1.5
CHANCE_MARGIN = 10.0
NOT_LEARNED = "not judged: model did not learn"
NOT_JUDGED = "not judged"
PER_IMAGE_MISSING = "not judged: per-image data not saved in this run"

REPRODUCES = "reproduces"
DOES_NOT_REPRODUCE = "not reproduced"
INCONCLUSIVE = "inconclusive within noise"
AT_THIS_SCALE = "at this scale"
CONSISTENT_WITH_SIZE = "consistent with the published size"
SIZE_EXCLUDED = "published size excluded"
SIGN_OPEN_SIZE_EXCLUDED = "sign not resolved, published size excluded"


def learning_minimum(num_classes: int) -> float:
    """The clean accuracy (percent) a model of ``num_classes`` classes needs to count as learned:
    ``max(CHANCE_FACTOR * 100 / C, 100 / C + CHANCE_MARGIN)``, capped at 100."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: a classifier needs at least 2 classes")
    chance = 100.0 / num_classes
    return min(100.0, max(CHANCE_FACTOR * chance, chance + CHANCE_MARGIN))


@dataclass(frozen=True)
class Learned:
    """One model's clean accuracy against the learning minimum, and the accuracies a verdict on it is judged at
    (``robust``, under the attack ``robust_label``, when known)."""

    name: str
    clean_acc: float
    num_classes: int
    minimum: float
    n: Optional[int] = None
    lower95: Optional[float] = None
    robust: Optional[float] = None
    robust_label: str = "robust"

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

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "clean": self.clean_acc, "robust": self.robust, "robust_label": self.robust_label,
                "n": self.n}


def model_learned(clean_acc: float, num_classes: int, n: Optional[int] = None, name: str = "model", *,
                  robust: Optional[float] = None, robust_label: str = "robust") -> Learned:
    """Whether a model with clean accuracy ``clean_acc`` (percent, on ``n`` test images when known) over
    ``num_classes`` classes learned; ``.learned`` is the answer, ``.describe()`` the reason. ``robust`` (percent,
    under ``robust_label``) is recorded for the scale a verdict states."""
    acc = float(clean_acc) if clean_acc is not None else float("nan")
    lower = None
    if n is not None and math.isfinite(acc):
        lower = 100.0 * wilson_interval(int(round(acc * n / 100.0)), int(n))[0]
    return Learned(name=name, clean_acc=acc, num_classes=int(num_classes), minimum=learning_minimum(num_classes),
                   n=None if n is None else int(n), lower95=lower, robust=None if robust is None else float(robust),
                   robust_label=robust_label)


def _one_decimal(x: float) -> str:
    """An accuracy to one decimal, halves rounded up as printed: 26.95 (539 of 2,000, or its float32 mean
    26.9499987) -> 27.0, where binary rounding gives 26.9. Four decimals first drop float noise below them."""
    return str(Decimal(f"{float(x):.4f}").quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _span(values: Sequence[float]) -> str:
    lo, hi = _one_decimal(min(values)), _one_decimal(max(values))
    return f"{lo} %" if lo == hi else f"{lo}-{hi} %"


def judged_at(models: Iterable[Learned]) -> str:
    """The accuracies a verdict was judged at: ``"clean 43.3 %, PGD-20 27.0 %"`` for one model, ranges and the
    number of models for several (``"clean 34.9-45.2 %, PGD-10 26.2-27.7 %, 4 models"``); ``""`` for none."""
    models = [m for m in models if math.isfinite(m.clean_acc)]
    if not models:
        return ""
    parts = [f"clean {_span([m.clean_acc for m in models])}"]
    robust = [m for m in models if m.robust is not None]
    labels = {m.robust_label for m in robust}
    if robust:
        parts.append(f"{labels.pop() if len(labels) == 1 else 'robust'} {_span([m.robust for m in robust])}")
    if len(models) > 1:
        parts.append(f"{len(models)} models")
    return ", ".join(parts)


def at_scale(word: str, scale: str = "") -> str:
    """``"<word> at this scale (<scale>)"``: every verdict about a paper names the scale it was judged at."""
    return f"{word} {AT_THIS_SCALE}" + (f" ({scale})" if scale else "")


def _not_learned_text(failed: Sequence[Learned]) -> str:
    return f"{NOT_LEARNED} ({'; '.join(m.describe() for m in failed)})"


def verdict(agrees: Optional[bool], models: Iterable[Learned]) -> tuple[Optional[bool], str]:
    """``(agrees, text)`` of a check on ``models``: ``(None, "not judged: model did not learn (...)")`` when
    any of them did not learn, else ``agrees`` unchanged with ``"agrees"``, ``"disagrees"`` or
    ``"inconclusive"`` (``agrees is None``: the difference is within the noise, or nothing to compare)."""
    failed = [m for m in models if not m.learned]
    if failed:
        return None, _not_learned_text(failed)
    if agrees is None:
        return None, "inconclusive"
    return bool(agrees), "agrees" if agrees else "disagrees"


def judge_check(check: Mapping[str, Any], models: Iterable[Learned], key: str = "agrees") -> dict[str, Any]:
    """A copy of ``check`` (a dict with ``key`` holding True/False/None) with ``key`` replaced by the guarded
    verdict of :func:`verdict` and ``"verdict"`` holding its text."""
    agrees, text = verdict(check.get(key), models)
    return {**check, key: agrees, "verdict": text}


def interval_verdict(low: float, high: float, expected: str, models: Iterable[Learned] = ()) -> str:
    """The verdict word on a paper's claim about the sign of an effect, from the effect's 95 % interval.

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
        return _not_learned_text(failed)
    if low <= 0.0 <= high:
        return INCONCLUSIVE
    above = low > 0.0
    return REPRODUCES if above == (expected == "positive") else DOES_NOT_REPRODUCE


def published_difference_verdict(low: float, high: float, published: float, direction: Optional[str], *,
                                  models: Iterable[Learned] = (), scale: Optional[str] = None) -> str:
    """The verdict on one published difference (a table cell, e.g. RPAT, Table 1's +RPAT minus base) from the
    measured difference's interval ``[low, high]``, stated at ``scale`` (default: :func:`judged_at` of ``models``).

    ``direction`` (``"positive"``, ``"negative"`` or None) is the direction the paper claims for this cell, decided
    from its text, not from the sign of its number. With a claimed direction: :data:`REPRODUCES` when the interval
    lies strictly on that side of zero, :data:`DOES_NOT_REPRODUCE` when strictly on the other side, otherwise
    :data:`SIGN_OPEN_SIZE_EXCLUDED` when the published difference lies outside the interval and
    :data:`INCONCLUSIVE` when inside. Without one: :data:`CONSISTENT_WITH_SIZE` when the published difference lies
    inside ``[low, high]`` (ends included), :data:`SIZE_EXCLUDED` when outside.
    """
    if not low <= high:
        raise ValueError(f"interval [{low}, {high}] has its low end above its high end")
    models = list(models)
    failed = [m for m in models if not m.learned]
    if failed:
        return _not_learned_text(failed)
    inside = low <= published <= high
    if direction is None:
        word = CONSISTENT_WITH_SIZE if inside else SIZE_EXCLUDED
    else:
        word = interval_verdict(low, high, direction)
        if word == INCONCLUSIVE and not inside:
            word = SIGN_OPEN_SIZE_EXCLUDED
    return at_scale(word, judged_at(models) if scale is None else scale)


@dataclass(frozen=True)
class ClaimCheck:
    """The verdict on one paper claim: ``agrees`` is True (:data:`REPRODUCES`), False
    (:data:`DOES_NOT_REPRODUCE`) or None (:data:`INCONCLUSIVE` or ``"not judged: ..."``); ``measured`` says the
    compared numbers in words, ``numbers`` holds them, ``rule`` the decision rule applied, ``judged_at`` the
    accuracies of the models it was judged at (``{"text", "models"}``)."""

    claim: str
    source: str
    agrees: Optional[bool]
    verdict: str
    measured: Optional[str]
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    judged_at: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"claim", "source", "measured", "agrees", "verdict", "rule", "numbers", "judged_at"}``."""
        return {"claim": self.claim, "source": self.source, "measured": self.measured, "agrees": self.agrees,
                "verdict": self.verdict, "rule": self.rule, "numbers": self.numbers, "judged_at": self.judged_at}


def judge(claim: str, source: str, rule: str, models: Iterable[Learned], *, reproduces: bool = False,
          contradicts: bool = False, measured: Optional[str] = None, numbers: Optional[dict] = None,
          missing: Optional[str] = None) -> ClaimCheck:
    """The guarded verdict: not learned first, then nothing to compare (``missing``), then the rule's outcome,
    stated at the scale of ``models``."""
    models = list(models)
    failed = [m for m in models if not m.learned]
    scale = judged_at(models)
    if failed:
        agrees, text = None, _not_learned_text(failed)
    elif missing is not None:
        agrees, text = None, missing if missing.startswith(NOT_JUDGED) else f"{NOT_JUDGED}: {missing}"
    elif reproduces and contradicts:
        raise AssertionError(f"{claim}: a rule both reproduces and contradicts")  # a bug in a rule, never data
    elif reproduces:
        agrees, text = True, at_scale(REPRODUCES, scale)
    elif contradicts:
        agrees, text = False, at_scale(DOES_NOT_REPRODUCE, scale)
    else:
        agrees, text = None, at_scale(INCONCLUSIVE, scale)
    return ClaimCheck(claim=claim, source=source, agrees=agrees, verdict=text, measured=measured, rule=rule,
                      numbers=numbers or {}, judged_at={"text": scale, "models": [m.record() for m in models]})


def per_image_data_missing(claim: str, source: str, rule: str, rerun: str, models: Iterable[Learned] = (), *,
                           measured: Optional[str] = None) -> ClaimCheck:
    """The check of a rule that needs per-image data a run did not save: ``"not judged: per-image data not saved
    in this run (rerun: <rerun>)"`` (or not learned, which comes first); ``measured`` says what the run does hold."""
    return judge(claim, source, rule, models, measured=measured, missing=f"{PER_IMAGE_MISSING} (rerun: {rerun})")


def bonferroni_z(k: int) -> float:
    """The two-sided normal quantile for ``k`` comparisons at family-wise 95 %: ``Φ⁻¹(1 − 0.025 / k)``
    (``Z95`` for ``k = 1``)."""
    if k < 1:
        raise ValueError(f"k={k!r}: the number of comparisons must be at least 1")
    return Z95 if k == 1 else NormalDist().inv_cdf(1.0 - 0.025 / k)


def check_points(name: str, value: float, low: float = 0.0, high: float = 100.0) -> float:
    """``value`` as a float in ``[low, high]``, else a one-line ConfigError naming it (a notebook parameter)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise ConfigError(f"{name}={value!r}: accepted a number in [{low:g}, {high:g}]")
    return float(value)


def _count(acc: float, n: int) -> int:
    """The number of correct images behind an accuracy ``acc`` (percent) on ``n`` images."""
    k = acc * n / 100.0
    if not math.isfinite(k) or abs(k - round(k)) > 1e-6 * max(1, n) or not 0 <= round(k) <= n:
        raise ValueError(f"accuracy {acc!r}% is not a whole number of correct images out of n={n}")
    return int(round(k))


def independent_difference_interval(k_a: int, n_a: int, k_b: int, n_b: int, z: float = Z95) -> tuple[float, float]:
    """Interval of ``k_a / n_a − k_b / n_b`` for two independent samples, as fractions (Newcombe 1998, "Interval
    estimation for the difference between independent proportions", method 10): with Wilson intervals
    ``(l_a, u_a)``, ``(l_b, u_b)`` and ``d = p_a − p_b``, ``(d − sqrt((p_a − l_a)² + (u_b − p_b)²),
    d + sqrt((u_a − p_a)² + (p_b − l_b)²))``."""
    p_a, p_b = k_a / n_a, k_b / n_b
    l_a, u_a = wilson_interval(k_a, n_a, z)
    l_b, u_b = wilson_interval(k_b, n_b, z)
    d = p_a - p_b
    return d - math.hypot(p_a - l_a, u_b - p_b), d + math.hypot(u_a - p_a, p_b - l_b)


def accuracy_difference(acc_a: float, acc_b: float, n: int, *, correct_a: Optional[Sequence[bool]] = None,
                        correct_b: Optional[Sequence[bool]] = None, z: float = Z95) -> dict[str, Any]:
    """``acc_a - acc_b`` (points) of two models on the same ``n`` images, with its interval at quantile ``z``.

    With both per-image correctness lists: Newcombe's paired interval (1998, method 10;
    :func:`atkit.core.stats.newcombe_paired_interval`). Without: Newcombe's interval for independent proportions
    (1998, method 10), wider than the paired one when the models are positively correlated, as models on the same
    images are. Returns ``{"difference", "ci": [low, high], "method"}``.
    """
    ka, kb = _count(acc_a, n), _count(acc_b, n)
    if correct_a is not None and correct_b is not None:
        a, b = [bool(v) for v in correct_a], [bool(v) for v in correct_b]
        if len(a) != n or len(b) != n or sum(a) != ka or sum(b) != kb:
            raise ValueError(f"per-image correctness ({len(a)}, {len(b)} images, {sum(a)}, {sum(b)} correct) does "
                             f"not match the accuracies {acc_a}%, {acc_b}% on n={n}")
        both = sum(u and v for u, v in zip(a, b))
        lo, hi = newcombe_paired_interval(both, ka - both, kb - both, n - ka - kb + both, z=z)
        method = "Newcombe paired (method 10)"
    else:
        lo, hi = independent_difference_interval(ka, n, kb, n, z)
        method = "Newcombe independent (method 10)"
    return {"difference": 100.0 * (ka - kb) / n, "ci": [100.0 * lo, 100.0 * hi], "method": method}


def interval_text(d: Mapping[str, Any]) -> str:
    return f"{d['difference']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"

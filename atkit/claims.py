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

**One function per paper claim.** The motivation notebooks compute their tables and call these to judge them:
:func:`perception_mse_claim` (RPAT, Fig. 2); :func:`boundary_budget_hardly_moves_robustness`,
:func:`moderate_boundary_budget_helps_clean`, :func:`nonboundary_needs_full_budget` (RAAT, Fig. 2) and
:func:`appropriate_eta_helps_both` (RAAT, Fig. 5b); :func:`all_or_none_share`,
:func:`transfer_follows_surrogate_success`, :func:`similar_failure_patterns` and
:func:`hard_labels_collapse_under_autoattack` (DUCAT, Fig. 2, 3, 8 and 4). Each returns a :class:`ClaimCheck`:
the verdict (:data:`REPRODUCES`, :data:`DOES_NOT_REPRODUCE`, :data:`INCONCLUSIVE` or ``"not judged: ..."``),
``agrees`` (True / False / None), the numbers compared and the rule, as one JSON-ready dict (``.to_dict()``).

**The noise rule.** Every comparison is a 95 % interval, never a bare difference: an accuracy difference
between two models on the same ``n`` test images is Newcombe's paired interval (1998, method 10) when the
per-image correctness is given, else Newcombe's interval for independent proportions (1998, method 10 of the
companion paper: Wilson intervals combined as ``d ± sqrt(...)``, wider, hence conservative for paired data).
A claim that *some* of ``k`` comparisons shows an effect (the best budget, any η, any reversed pair) uses
Bonferroni's ``z = Φ⁻¹(1 − 0.025 / k)``; a claim that *every* comparison does (intersection-union) needs none.
A fixed number enters only as a stated effect size of the paper's words: ``robust_tolerance`` (points within
which robust accuracies count as "the same", :func:`boundary_budget_hardly_moves_robustness`,
:func:`appropriate_eta_helps_both`), the 80 % of DUCAT, Fig. 2, and DUCAT's "collapse" margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, Mapping, Optional, Sequence

from .stats import Z95, mean_difference_interval, newcombe_paired_interval, wilson_interval
from .utils import ConfigError

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


# ------------------------------------------------------------------------------------------ claim checks
NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class ClaimCheck:
    """The verdict on one paper claim: ``agrees`` is True (:data:`REPRODUCES`), False
    (:data:`DOES_NOT_REPRODUCE`) or None (:data:`INCONCLUSIVE` or ``"not judged: ..."``); ``measured`` says the
    compared numbers in words, ``numbers`` holds them, ``rule`` the decision rule applied."""

    claim: str
    source: str
    agrees: Optional[bool]
    verdict: str
    measured: Optional[str]
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"claim", "source", "measured", "agrees", "verdict", "rule", "numbers"}`` (the notebooks' ``checks``)."""
        return {"claim": self.claim, "source": self.source, "measured": self.measured, "agrees": self.agrees,
                "verdict": self.verdict, "rule": self.rule, "numbers": self.numbers}


def _judge(claim: str, source: str, rule: str, models: Iterable[Learned], *, reproduces: bool = False,
           contradicts: bool = False, measured: Optional[str] = None, numbers: Optional[dict] = None,
           missing: Optional[str] = None) -> ClaimCheck:
    """The guarded verdict: not learned first, then nothing to compare (``missing``), then the rule's outcome."""
    failed = [m for m in models if not m.learned]
    if failed:
        agrees, text = None, f"{NOT_LEARNED} ({'; '.join(m.describe() for m in failed)})"
    elif missing is not None:
        agrees, text = None, f"{NOT_JUDGED}: {missing}"
    elif reproduces and contradicts:
        raise AssertionError(f"{claim}: a rule both reproduces and contradicts")  # a bug in a rule, never data
    elif reproduces:
        agrees, text = True, REPRODUCES
    elif contradicts:
        agrees, text = False, DOES_NOT_REPRODUCE
    else:
        agrees, text = None, INCONCLUSIVE
    return ClaimCheck(claim=claim, source=source, agrees=agrees, verdict=text, measured=measured, rule=rule,
                      numbers=numbers or {})


def bonferroni_z(k: int) -> float:
    """The two-sided normal quantile for ``k`` comparisons at family-wise 95 %: ``Φ⁻¹(1 − 0.025 / k)``
    (``Z95`` for ``k = 1``)."""
    if k < 1:
        raise ValueError(f"k={k!r}: the number of comparisons must be at least 1")
    return Z95 if k == 1 else NormalDist().inv_cdf(1.0 - 0.025 / k)


def _check_points(name: str, value: float, low: float = 0.0, high: float = 100.0) -> float:
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
    :func:`atkit.stats.newcombe_paired_interval`). Without: Newcombe's interval for independent proportions
    (1998, method 10): with Wilson intervals ``(l_a, u_a)``, ``(l_b, u_b)``, ``low = d − sqrt((p_a − l_a)² +
    (u_b − p_b)²)``, ``high = d + sqrt((u_a − p_a)² + (p_b − l_b)²)``, which is wider than the paired one when
    the models are positively correlated, as models on the same images are. Returns ``{"difference",
    "ci": [low, high], "method"}``.
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


def _interval_text(d: Mapping[str, Any]) -> str:
    return f"{d['difference']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


# ----------------------------------------------------------------------------- RPAT, Fig. 2 (mse_perception)
PERCEPTION_MSE_SOURCE = "RPAT, Fig. 2"
#: The paper's order of failure and success MSE per training method (RPAT, Sec. 3 and Fig. 2).
PERCEPTION_MSE_PAPER = {"standard": "failure>success", "random_noise": "failure>success", "pgd_at": "failure<success"}


def perception_mse_claim(training: str, mse: Sequence[float], success: Sequence[bool], model: Learned, *,
                         seed: int = 0, n_resamples: int = 4999) -> ClaimCheck:
    """RPAT, Fig. 2: after clean or random-noise training the failure cases' logit MSE exceeds the success
    cases' (failure > success); after PGD-AT it is below (failure < success).

    ``mse`` and ``success`` are per test image (the perturbed copy classified correctly or not). Rule: the
    95 % BCa bootstrap interval of ``mean(failure MSE) − mean(success MSE)``
    (:func:`atkit.stats.mean_difference_interval`, seeded) read by :func:`interval_verdict`: reproduces when it
    lies on the paper's side of zero, does not when on the other, inconclusive when it holds zero. Not judged
    with fewer than 2 success or 2 failure cases, or when ``model`` did not learn.
    """
    if training not in PERCEPTION_MSE_PAPER:
        raise ConfigError(f"training={training!r}: the paper's direction is known for {sorted(PERCEPTION_MSE_PAPER)}")
    paper = PERCEPTION_MSE_PAPER[training]
    values, flags = [float(v) for v in mse], [bool(v) for v in success]
    if len(values) != len(flags):
        raise ValueError(f"{len(values)} MSE values but {len(flags)} success flags")
    ok = [v for v, f in zip(values, flags) if f]
    bad = [v for v, f in zip(values, flags) if not f]
    mean_ok = sum(ok) / len(ok) if ok else float("nan")
    mean_bad = sum(bad) / len(bad) if bad else float("nan")
    direction = None if not ok or not bad else ("failure>success" if mean_bad > mean_ok else "failure<success")
    numbers: dict[str, Any] = {"training": training, "mse_success": mean_ok, "mse_failure": mean_bad,
                               "n_success": len(ok), "n_failure": len(bad), "direction": direction,
                               "paper_direction": paper, "failure_minus_success": None, "ci95": None}
    rule = ("95 % BCa bootstrap interval of mean failure MSE - mean success MSE: reproduces when it excludes 0 on "
            "the paper's side, does not on the other side, inconclusive when it holds 0")
    claim = f"{training}: {paper.replace('>', ' MSE > ').replace('<', ' MSE < ')} MSE"
    missing = None
    if len(ok) < 2 or len(bad) < 2:
        missing = "fewer than 2 success or failure cases"
    elif model.learned:
        diff = mean_difference_interval(bad, ok, seed=seed, n_resamples=n_resamples)
        numbers.update(failure_minus_success=diff["difference"], ci95=diff["ci95"], ci_method=diff["ci_method"])
        if not all(math.isfinite(v) for v in diff["ci95"]):
            missing = "the bootstrap interval is undefined (every MSE equal)"
    measured = None if direction is None else (
        f"failure {mean_bad:.4g} vs success {mean_ok:.4g}" + (
            "" if numbers["ci95"] is None else
            f"; difference {numbers['failure_minus_success']:+.4g} [{numbers['ci95'][0]:+.4g}, "
            f"{numbers['ci95'][1]:+.4g}]"))
    if missing is not None or not model.learned:
        return _judge(claim, PERCEPTION_MSE_SOURCE, rule, [model], measured=measured, numbers=numbers, missing=missing)
    low, high = numbers["ci95"]
    sign = "positive" if paper == "failure>success" else "negative"
    text = interval_verdict(low, high, sign)
    return _judge(claim, PERCEPTION_MSE_SOURCE, rule, [model], reproduces=text == REPRODUCES,
                  contradicts=text == DOES_NOT_REPRODUCE, measured=measured, numbers=numbers)


# ------------------------------------------------------------------- RAAT, Fig. 2 and 5b (boundary_samples)
BOUNDARY_SOURCE = "RAAT, Fig. 2 (App. C.1)"
ETA_SOURCE = "RAAT, Fig. 5b"
Correctness = Mapping[str, Mapping[str, Sequence[bool]]]  # variant -> "clean_acc" / "aa_acc" -> per-image flags


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, n: int, correct: Optional[Correctness],
          z: float = Z95) -> dict[str, Any]:
    """:func:`accuracy_difference` of rows ``a`` and ``b`` (``variant``, ``metric``), paired when ``correct``
    holds both variants' flags."""
    fa = (correct or {}).get(a["variant"], {}).get(metric)
    fb = (correct or {}).get(b["variant"], {}).get(metric)
    return {"a": a["variant"], "b": b["variant"], "metric": metric,
            **accuracy_difference(float(a[metric]), float(b[metric]), n, correct_a=fa, correct_b=fb, z=z)}


def budget_axis(variants: Iterable[Mapping[str, Any]], varied: str, eta: float) -> list[dict[str, Any]]:
    """The rows of one budget axis, sorted by the varied scale: ``varied`` is ``"boundary_scale"`` (the
    non-boundary samples at the full ε) or ``"nonboundary_scale"`` (the boundary samples at ε), partition ``eta``."""
    fixed = {"boundary_scale": "nonboundary_scale", "nonboundary_scale": "boundary_scale"}.get(varied)
    if fixed is None:
        raise ValueError(f"varied={varied!r}: accepted 'boundary_scale', 'nonboundary_scale'")
    rows = [dict(r) for r in variants if float(r[fixed]) == 1.0 and abs(float(r["eta"]) - float(eta)) < 1e-6]
    return sorted(rows, key=lambda r: float(r[varied]))


def _learned_rows(rows: Iterable[Mapping[str, Any]], n: int, num_classes: int) -> list[Learned]:
    return [model_learned(float(r["clean_acc"]), num_classes, n=n, name=str(r["variant"])) for r in rows]


def boundary_budget_hardly_moves_robustness(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                            tolerance: float = 2.0, metric: str = "aa_acc",
                                            correct: Optional[Correctness] = None) -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "applying perturbations of different intensities to boundary samples can hardly
    impact the final robustness".

    ``axis``: the boundary-budget rows (:func:`budget_axis` with ``"boundary_scale"``), each with ``variant``,
    ``clean_acc`` and ``metric`` (percent on ``n`` images). ``tolerance``: the points within which two robust
    accuracies count as the same (the paper gives no number; an equivalence margin). Rule, over every pair of
    budgets: reproduces when every pair's 95 % interval of the difference lies inside ``[−tolerance, tolerance]``
    (equivalence, intersection-union: no correction); does not when some pair's interval (Bonferroni over the
    pairs) lies wholly outside it; inconclusive otherwise.
    """
    tolerance = _check_points("robust_tolerance", tolerance)
    claim = "boundary budget hardly moves robustness"
    rule = (f"every pair of boundary budgets: 95 % interval of the {metric} difference inside +-{tolerance:g} points "
            f"-> reproduces; some pair's interval (Bonferroni) wholly beyond +-{tolerance:g} -> does not")
    models = _learned_rows(axis, n, num_classes)
    if len(axis) < 2:
        return _judge(claim, BOUNDARY_SOURCE, rule, models, missing="fewer than 2 boundary budgets")
    pairs = [(a, b) for i, a in enumerate(axis) for b in axis[i + 1:]]
    z_any = bonferroni_z(len(pairs))
    inside, beyond = True, False
    diffs = []
    for a, b in pairs:
        d95 = _diff(b, a, metric, n, correct)
        dz = _diff(b, a, metric, n, correct, z=z_any)
        inside &= -tolerance <= d95["ci"][0] and d95["ci"][1] <= tolerance
        beyond |= dz["ci"][0] > tolerance or dz["ci"][1] < -tolerance
        diffs.append({**d95, "ci_bonferroni": dz["ci"]})
    values = [float(r[metric]) for r in axis]
    spread = max(values) - min(values)
    scales = [float(r["boundary_scale"]) for r in axis]
    measured = (f"{metric} spread {spread:.2f} points over boundary budgets {scales}; widest pair "
                + _interval_text(max(diffs, key=lambda d: abs(d["difference"]))))
    return _judge(claim, BOUNDARY_SOURCE, rule, models, reproduces=inside, contradicts=beyond, measured=measured,
                  numbers={"spread": spread, "tolerance": tolerance, "metric": metric, "pairs": diffs})


def moderate_boundary_budget_helps_clean(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                         min_gain: float = 0.0,
                                         correct: Optional[Correctness] = None) -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "moderate perturbations for [boundary samples] do benefit the generalization on
    clean data".

    ``axis``: the boundary-budget rows (:func:`budget_axis`); the moderate budgets are those strictly between
    0 and 1, compared with the full budget (scale 1) in clean accuracy. Rule, with Bonferroni over the ``k``
    moderate budgets: reproduces when some budget's interval of its clean gain lies above ``min_gain`` points
    (default 0: any gain beyond noise); does not when every budget's interval lies below ``min_gain``;
    inconclusive otherwise.
    """
    min_gain = _check_points("clean_tolerance", min_gain)
    claim = "a moderate boundary budget helps clean accuracy"
    rule = (f"clean gain of each budget in (0, 1) over the full budget, 95 % interval Bonferroni over the budgets: "
            f"some interval above {min_gain:g} -> reproduces; every interval below {min_gain:g} -> does not")
    full = [r for r in axis if float(r["boundary_scale"]) == 1.0]
    moderate = [r for r in axis if 0.0 < float(r["boundary_scale"]) < 1.0]
    models = _learned_rows(list(moderate) + full, n, num_classes)
    if not full or not moderate:
        return _judge(claim, BOUNDARY_SOURCE, rule, models, missing="no budget strictly between 0 and eps, or no "
                                                                    "full-budget run")
    z = bonferroni_z(len(moderate))
    diffs = [{**_diff(r, full[0], "clean_acc", n, correct, z=z), "scale": float(r["boundary_scale"])}
             for r in moderate]
    best = max(diffs, key=lambda d: d["difference"])
    measured = (f"clean {float(full[0]['clean_acc']) + best['difference']:.2f} at {best['scale']:g} x eps vs "
                f"{float(full[0]['clean_acc']):.2f} at eps ({_interval_text(best)}, Bonferroni over {len(diffs)})")
    return _judge(claim, BOUNDARY_SOURCE, rule, models, measured=measured,
                  reproduces=any(d["ci"][0] > min_gain for d in diffs),
                  contradicts=all(d["ci"][1] < min_gain for d in diffs),
                  numbers={"min_gain": min_gain, "z": z, "differences": diffs})


def nonboundary_needs_full_budget(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                  metric: str = "aa_acc", correct: Optional[Correctness] = None) -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "to learn the basic adversarial robustness, it is vital that [non-boundary
    samples] are fully perturbed".

    ``axis``: the non-boundary-budget rows (:func:`budget_axis` with ``"nonboundary_scale"``). Rule:
    reproduces when the 95 % interval of (full budget − smallest budget) in ``metric`` lies above 0 and no
    smaller budget is more robust than the full one beyond noise; does not when some smaller budget's interval
    of (it − full) lies above 0 (Bonferroni over the smaller budgets); inconclusive otherwise.
    """
    claim = "non-boundary samples need the full eps"
    rule = (f"{metric}: 95 % interval of full budget - smallest budget above 0 and no smaller budget better beyond "
            "noise -> reproduces; some smaller budget better (Bonferroni) -> does not")
    full = [r for r in axis if float(r["nonboundary_scale"]) == 1.0]
    smaller = [r for r in axis if float(r["nonboundary_scale"]) < 1.0]
    models = _learned_rows(list(smaller) + full, n, num_classes)
    if not full or not smaller:
        return _judge(claim, BOUNDARY_SOURCE, rule, models, missing="no non-boundary budget below eps, or no "
                                                                    "full-budget run")
    loss = _diff(full[0], smaller[0], metric, n, correct)
    z = bonferroni_z(len(smaller))
    better = [{**_diff(r, full[0], metric, n, correct, z=z), "scale": float(r["nonboundary_scale"])} for r in smaller]
    contradicts = any(d["ci"][0] > 0 for d in better)
    measured = (f"{metric} {float(full[0][metric]):.2f} at eps, {float(smaller[0][metric]):.2f} at "
                f"{float(smaller[0]['nonboundary_scale']):g} x eps (eps - smallest {_interval_text(loss)}); best "
                f"{max(float(r[metric]) for r in axis):.2f}")
    return _judge(claim, BOUNDARY_SOURCE, rule, models, measured=measured, contradicts=contradicts,
                  reproduces=loss["ci"][0] > 0 and not contradicts,
                  numbers={"metric": metric, "full_minus_smallest": loss, "smaller_minus_full": better})


def appropriate_eta_helps_both(eta_rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any], n: int,
                               num_classes: int, *, robust_tolerance: float = 2.0, min_gain: float = 0.0,
                               robust_metric: str = "aa_acc", correct: Optional[Correctness] = None) -> ClaimCheck:
    """RAAT, Fig. 5b: "an appropriate partition of boundary and non-boundary samples helps achieve better
    performance on both perturbed and clean data".

    ``eta_rows``: one row per η of the sweep (``variant``, ``eta``, ``clean_acc``, ``robust_metric``);
    ``reference``: PGD-AT's row. Rule, Bonferroni over the ``k`` values of η: reproduces when some η's clean
    gain interval lies above ``min_gain`` (default 0) and its robust change interval above ``−robust_tolerance``
    (no loss beyond the tolerance: non-inferiority); does not when every η either has its clean interval below
    ``min_gain`` or its robust interval below ``−robust_tolerance``; inconclusive otherwise.
    """
    robust_tolerance = _check_points("robust_tolerance", robust_tolerance)
    min_gain = _check_points("clean_tolerance", min_gain)
    claim = "an appropriate eta helps clean and robust accuracy"
    rule = (f"per eta vs PGD-AT, 95 % intervals Bonferroni over the etas: clean gain above {min_gain:g} and "
            f"{robust_metric} change above -{robust_tolerance:g} for some eta -> reproduces; every eta clean below "
            f"{min_gain:g} or {robust_metric} below -{robust_tolerance:g} -> does not")
    models = _learned_rows(list(eta_rows) + [reference], n, num_classes)
    if not eta_rows:
        return _judge(claim, ETA_SOURCE, rule, models, missing="no eta in the sweep")
    z = bonferroni_z(len(eta_rows))
    per_eta = []
    for r in eta_rows:
        c, a = _diff(r, reference, "clean_acc", n, correct, z=z), _diff(r, reference, robust_metric, n, correct, z=z)
        per_eta.append({"eta": float(r["eta"]), "variant": r["variant"], "clean": c, "robust": a,
                        "better": c["ci"][0] > min_gain and a["ci"][0] > -robust_tolerance,
                        "worse": c["ci"][1] < min_gain or a["ci"][1] < -robust_tolerance})
    changes = ", ".join(f"{e['eta']:g}: {e['clean']['difference']:+.1f}/{e['robust']['difference']:+.1f}"
                        for e in per_eta)
    measured = (f"clean/{robust_metric} change against PGD-AT (clean {float(reference['clean_acc']):.2f}, "
                f"{robust_metric} {float(reference[robust_metric]):.2f}) per eta: {changes}")
    return _judge(claim, ETA_SOURCE, rule, models, measured=measured,
                  reproduces=any(e["better"] for e in per_eta), contradicts=all(e["worse"] for e in per_eta),
                  numbers={"robust_tolerance": robust_tolerance, "min_gain": min_gain, "z": z, "per_eta": per_eta})


# ------------------------------------------------------------- DUCAT, Fig. 2, 3, 4 and 8 (always_failed_overlap)
def all_or_none_share(overlap: Mapping[str, Any], models: Iterable[Learned], *,
                      threshold: float = 0.8) -> ClaimCheck:
    """DUCAT, Fig. 2: "with a high probability (i.e., > 80%), [a test sample's] adversarial sample can either be
    uniformly defended by the four methods or escape from all of them".

    ``overlap``: :meth:`atkit.analysis.CrossAttack.overlap_summary` (``n``, ``count_by_defeated``). Rule: the
    95 % Wilson interval of the share defended by all or by none: reproduces when it lies above ``threshold``
    (the paper's 0.8), does not when below, inconclusive when it holds it.
    """
    threshold = _check_points("all_or_none_threshold", threshold, 0.0, 1.0)
    claim = f"over {threshold:.0%} of samples are defended by all models or by none"
    rule = f"95 % Wilson interval of the all-or-none share: above {threshold:g} -> reproduces, below -> does not"
    counts, n = list(overlap["count_by_defeated"]), int(overlap["n"])
    k = int(counts[0]) + int(counts[-1])
    low, high = wilson_interval(k, n)
    measured = (f"{k / n:.1%} [{low:.1%}, {high:.1%}] (all {int(counts[0]) / n:.1%}, none {int(counts[-1]) / n:.1%}; "
                f"n={n})")
    return _judge(claim, "DUCAT, Fig. 2", rule, models, reproduces=low > threshold, contradicts=high < threshold,
                  measured=measured, numbers={"share": k / n, "ci95": [low, high], "n": n, "threshold": threshold})


def transfer_follows_surrogate_success(transfer: Iterable[Mapping[str, Any]],
                                       models: Iterable[Learned]) -> ClaimCheck:
    """DUCAT, Fig. 3: examples that fooled the surrogate are "highly likely to be uniformly beaten" on the other
    models; those that did not rarely fool them.

    ``transfer``: :meth:`atkit.analysis.CrossAttack.transfer_table` rows (``surrogate``, ``target``,
    ``subset``, ``n``, ``fooled``). Per off-diagonal (surrogate, target) cell, the fooled rate of the success
    subset minus that of the failure subset (disjoint images: Newcombe's independent interval). Rule: reproduces
    when every cell's 95 % interval lies above 0 (intersection-union: no correction); does not when some cell's
    interval (Bonferroni over the cells) lies below 0; inconclusive otherwise. Cells with an empty subset are
    left out.
    """
    claim = "examples that fooled the surrogate transfer, the others do not"
    rule = ("per off-diagonal (surrogate, target): 95 % interval of fooled % (success subset) - fooled % (failure "
            "subset); every one above 0 -> reproduces, some below 0 (Bonferroni) -> does not")
    rows = {(r["surrogate"], r["target"], r["subset"]): r for r in transfer if r["surrogate"] != r["target"]}
    cells = sorted({(s, t) for s, t, _ in rows})
    usable = [(s, t) for s, t in cells if (s, t, "success") in rows and (s, t, "failure") in rows
              and int(rows[s, t, "success"]["n"]) > 0 and int(rows[s, t, "failure"]["n"]) > 0]
    models = list(models)
    if not usable:
        return _judge(claim, "DUCAT, Fig. 3", rule, models, missing="no surrogate with both fooled and unfooled "
                                                                    "examples")
    z = bonferroni_z(len(usable))
    diffs = []
    for s, t in usable:
        a, b = rows[s, t, "success"], rows[s, t, "failure"]
        entry = {"surrogate": s, "target": t}
        counts = (int(a["fooled"]), int(a["n"]), int(b["fooled"]), int(b["n"]))
        entry["difference"] = 100.0 * (counts[0] / counts[1] - counts[2] / counts[3])
        for name, zz in (("ci", Z95), ("ci_bonferroni", z)):
            entry[name] = [100.0 * v for v in independent_difference_interval(*counts, z=zz)]
        diffs.append(entry)
    pooled = {sub: [100.0 * int(rows[s, t, sub]["fooled"]) / int(rows[s, t, sub]["n"]) for s, t in usable]
              for sub in ("success", "failure")}
    succ, fail = (sum(v) / len(v) for v in (pooled["success"], pooled["failure"]))
    worst = min(diffs, key=lambda d: d["ci"][0])
    measured = (f"targets fooled: {succ:.1f}% (success subsets) vs {fail:.1f}% (failure subsets), mean over "
                f"{len(usable)} cells; weakest cell {worst['surrogate']} -> {worst['target']} "
                f"{worst['difference']:+.1f} [{worst['ci'][0]:+.1f}, {worst['ci'][1]:+.1f}]")
    return _judge(claim, "DUCAT, Fig. 3", rule, models, measured=measured,
                  reproduces=all(d["ci"][0] > 0 for d in diffs),
                  contradicts=any(d["ci_bonferroni"][1] < 0 for d in diffs),
                  numbers={"mean_fooled_success": succ, "mean_fooled_failure": fail, "cells": diffs})


def correlation_interval(r: float, n_cells: int, z: float = Z95) -> tuple[float, float]:
    """Fisher's interval of a Pearson correlation ``r`` over ``n_cells`` pairs: ``tanh(atanh r ± z / sqrt(n − 3))``
    (approximate: it assumes independent, roughly normal pairs)."""
    if n_cells < 4:
        raise ValueError(f"n_cells={n_cells!r}: Fisher's interval needs at least 4 pairs")
    r = max(-1.0 + 1e-12, min(1.0 - 1e-12, float(r)))
    half = z / math.sqrt(n_cells - 3)
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def similar_failure_patterns(correlations: Mapping[str, float], n_cells: int,
                             models: Iterable[Learned]) -> ClaimCheck:
    """DUCAT, Fig. 8: "similar failure patterns" in the four models' confusion matrices under PGD-10.

    ``correlations``: Pearson correlation of the off-diagonal confusion counts per model pair (NaN for a
    constant matrix: left out); ``n_cells``: the off-diagonal cells, ``C (C − 1)``. Rule (Fisher's interval,
    :func:`correlation_interval`): reproduces when every pair's 95 % interval lies above 0; does not when some
    pair's interval (Bonferroni over the pairs) lies below 0; inconclusive otherwise.
    """
    claim = "similar failure patterns in the confusion matrices"
    rule = ("Fisher 95 % interval of each pair's off-diagonal correlation: every one above 0 -> reproduces, some "
            "below 0 (Bonferroni) -> does not")
    usable = {k: float(v) for k, v in correlations.items() if v is not None and math.isfinite(float(v))}
    models = list(models)
    if not usable:
        return _judge(claim, "DUCAT, Fig. 8", rule, models, missing="no pair with a non-constant confusion matrix")
    z = bonferroni_z(len(usable))
    pairs = {k: {"r": r, "ci": list(correlation_interval(r, n_cells)),
                 "ci_bonferroni": list(correlation_interval(r, n_cells, z))} for k, r in usable.items()}
    weakest = min(pairs, key=lambda k: pairs[k]["ci"][0])
    measured = (f"mean off-diagonal correlation {sum(usable.values()) / len(usable):.2f}; weakest {weakest} "
                f"{pairs[weakest]['r']:.2f} [{pairs[weakest]['ci'][0]:.2f}, {pairs[weakest]['ci'][1]:.2f}] over "
                f"{n_cells} cells")
    return _judge(claim, "DUCAT, Fig. 8", rule, models, measured=measured,
                  reproduces=all(p["ci"][0] > 0 for p in pairs.values()),
                  contradicts=any(p["ci_bonferroni"][1] < 0 for p in pairs.values()),
                  numbers={"n_cells": n_cells, "pairs": pairs})


def hard_labels_collapse_under_autoattack(toy: Iterable[Mapping[str, Any]], base_model: Optional[str], n: int,
                                          num_classes: int, *, protocol: str = "published", threshold: float = 10.0,
                                          hard_variant: str = "hard-label DUCAT",
                                          correct: Optional[Correctness] = None) -> ClaimCheck:
    """DUCAT, Fig. 4 (Sec. 2.2.3): the hard-label dummy-class model reaches "surprisingly high accuracy both on
    clean data and under PGD-10 adversary" but "immediately collapses once facing Auto-Attack".

    ``toy``: the toy-case rows (``model``, ``protocol``, ``variant``, ``clean_acc``, ``pgd_acc``, ``aa_acc``, percent
    on ``n`` images): the ``hard_variant`` rows per protocol and the ``base_model`` row (None: no base compared).
    The hard-label PGD-10 accuracy is the published protocol's (the paper's number), its AutoAttack accuracy that
    of ``protocol``; ``correct`` (row ``model`` -> ``"pgd_acc"`` / ``"aa_acc"`` -> per-image flags) makes the
    intervals paired. ``threshold``: the points by which PGD-10 must exceed AutoAttack to call it a collapse (the
    paper's drop is far larger; a stated effect size). Gap = PGD-10 − AutoAttack with its 95 % interval; the hard
    gap minus the base gap combines the two intervals (Zou & Donner's MOVER, the rule behind Newcombe's). Rule:
    reproduces when the hard gap's interval lies above ``threshold`` and the difference's above 0; does not when
    the hard gap's lies below ``threshold`` or the difference's below 0; inconclusive otherwise.
    """
    threshold = _check_points("collapse_threshold", threshold)
    claim = f"hard labels: high PGD-10 accuracy that collapses under AutoAttack ({protocol} protocol)"
    rule = (f"95 % interval of PGD-10 (published) - AutoAttack ({protocol}) of the hard-label model above "
            f"{threshold:g} points and of its gap minus the base model's above 0 -> reproduces; either below -> "
            "does not")
    rows = [dict(r) for r in toy]
    hard = {r.get("protocol"): r for r in rows if r.get("variant") == hard_variant}
    base = next((r for r in rows if base_model is not None and r.get("model") == base_model), None)
    published, attacked = hard.get("published"), hard.get(protocol)
    flags = correct or {}
    models = [model_learned(float(r["clean_acc"]), num_classes, n=n, name=name)
              for r, name in ((published, hard_variant), (base, base_model)) if r is not None]
    if published is None or attacked is None:
        return _judge(claim, "DUCAT, Fig. 4", rule, models, missing=f"no {hard_variant} row for the published and "
                                                                    f"the {protocol} protocol")
    g_hard = accuracy_difference(float(published["pgd_acc"]), float(attacked["aa_acc"]), n,
                                 correct_a=flags.get(published["model"], {}).get("pgd_acc"),
                                 correct_b=flags.get(attacked["model"], {}).get("aa_acc"))
    lh, hh = g_hard["ci"]
    measured = (f"PGD-10 {float(published['pgd_acc']):.1f}% (published) vs AA {float(attacked['aa_acc']):.1f}% "
                f"({protocol}): gap {_interval_text(g_hard)}")
    numbers: dict[str, Any] = {"protocol": protocol, "threshold": threshold, "hard_gap": g_hard}
    low = high = None
    if base is not None:
        g_base = accuracy_difference(float(base["pgd_acc"]), float(base["aa_acc"]), n,
                                     correct_a=flags.get(base["model"], {}).get("pgd_acc"),
                                     correct_b=flags.get(base["model"], {}).get("aa_acc"))
        d = g_hard["difference"] - g_base["difference"]
        (lb, hb) = g_base["ci"]
        low = d - math.hypot(g_hard["difference"] - lh, hb - g_base["difference"])
        high = d + math.hypot(hh - g_hard["difference"], g_base["difference"] - lb)
        measured += f"; {base_model} gap {_interval_text(g_base)}; difference {d:+.2f} [{low:+.2f}, {high:+.2f}]"
        numbers.update(base_gap=g_base, gap_difference={"difference": d, "ci": [low, high], "method": "MOVER"})
    return _judge(claim, "DUCAT, Fig. 4", rule, models, measured=measured, numbers=numbers,
                  reproduces=lh > threshold and (low is None or low > 0),
                  contradicts=hh < threshold or (high is not None and high < 0))

__all__ = ["BOUNDARY_SOURCE", "CHANCE_FACTOR", "CHANCE_MARGIN", "ClaimCheck", "DOES_NOT_REPRODUCE", "ETA_SOURCE",
           "INCONCLUSIVE", "Learned", "NOT_JUDGED", "NOT_LEARNED", "PERCEPTION_MSE_PAPER", "PERCEPTION_MSE_SOURCE",
           "REPRODUCES", "accuracy_difference", "all_or_none_share", "appropriate_eta_helps_both", "bonferroni_z",
           "boundary_budget_hardly_moves_robustness", "budget_axis", "correlation_interval",
           "hard_labels_collapse_under_autoattack", "independent_difference_interval", "interval_verdict", "judge_check", "learning_minimum",
           "model_learned", "moderate_boundary_budget_helps_clean", "nonboundary_needs_full_budget",
           "perception_mse_claim", "similar_failure_patterns", "transfer_follows_surrogate_success", "verdict"]

"""Statistics for reported accuracies: Wilson intervals, mean ± sd over seeds, exact paired McNemar test.

* :func:`wilson_interval` -- 95 % Wilson score interval of an accuracy ``k / n`` (Wilson 1927;
  Newcombe 1998, method 3): ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
* :func:`seed_summary` -- mean, sample standard deviation (ddof = 1) and the number of seeds.
* :func:`mcnemar_test` -- exact McNemar test of two classifiers on the same images: a two-sided
  binomial test of the discordant pairs ``b`` (A right, B wrong) and ``c`` (A wrong, B right) with
  ``p = 1/2``, plus the paired difference ``(b - c) / n`` and its 95 % Newcombe interval
  (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", method 10: Wilson intervals of both marginals combined with the
  correlation ``phi`` of the 2x2 table).
* :func:`seed_difference` -- ``mean(a) - mean(b)`` over seeds, with the seed-noise band
  ``2 sqrt(sd_a²/n_a + sd_b²/n_b)`` and the paired Student-t 95 % interval of the per-seed differences
  ``mean(d) ± t(0.975, n-1) sd(d) / sqrt(n)`` (runs paired by seed: same initialisation and batch order).

Several seeds per arm (runs paired by seed, every run scored on the same ``n`` images):

* :func:`paired_difference` -- one seed's per-image paired difference ``d_s = mean_i(a_i - b_i)`` and its
  variance ``var_i(a_i - b_i) / n`` (ddof = 1).
* :func:`pool_paired_differences` -- the seeds pooled: the inverse-variance (fixed-effect) estimate,
  Cochran's Q heterogeneity test, and, when Q rejects at a stated level, the DerSimonian-Laird
  random-effects estimate with the Hartung-Knapp-Sidik-Jonkman t interval as the primary one.
* :func:`equivalence_test` -- two one-sided tests (TOST, Schuirmann 1987) of the pooled difference against
  ``±margin``: equivalence when the 90 % interval lies inside ``(-margin, margin)``.
* :func:`bootstrap_over_images` -- a seeded percentile bootstrap over images of any statistic of them
  (Efron 1979), for statistics whose cells share images (e.g. correlations of confusion matrices).
* :func:`minimal_detectable_effect`, :func:`seeds_needed` -- the design's power: the smallest pooled difference
  a two-sided 5 % test detects with 80 % power, and the seeds a given difference needs.

On CIFAR-10's 10,000 test images an accuracy near 50 % has a 95 % margin of about ±1 point; a paired
test is what separates a one-point gain of a method from noise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _scipy_stats

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal



#: The two words of an exact McNemar test between two trained networks (one run per arm).
DIFFERS = "differs"
NO_DIFFERENCE = "no difference detected"


def two_networks_verdict(p_value: float, alpha: float = 0.05) -> str:
    """One trained network per arm (one seed): an exact McNemar test says whether these two networks differ on these
    images (:data:`DIFFERS` when ``p < alpha``, else :data:`NO_DIFFERENCE`); it says nothing about a method."""
    return DIFFERS if p_value < alpha else NO_DIFFERENCE

def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval ``(low, high)`` of the proportion ``k / n`` as fractions in [0, 1].

    ``(p + z²/(2n) ± z sqrt(p(1-p)/n + z²/(4n²))) / (1 + z²/n)`` with ``p = k/n`` (Wilson 1927).
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    if int(k) != k or not 0 <= k <= n:
        raise ValueError(f"k={k!r} must be an integer in [0, n={n}]")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp rounding at the ends (k = 0 or k = n give exactly 0 or 1).
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def accuracy_record(k: int, n: int) -> dict[str, Any]:
    """``{"accuracy", "k", "n", "ci95": [low, high], "ci_method"}`` of ``k`` correct of ``n``, in percent."""
    low, high = wilson_interval(k, n)
    return {"accuracy": 100.0 * k / n, "k": int(k), "n": int(n), "ci95": [100.0 * low, 100.0 * high],
            "ci_method": "wilson"}


def accuracy_intervals(per_sample: Mapping[str, Any]) -> dict[str, Any]:
    """Counts and 95 % Wilson intervals (percent) of per-sample correctness flags, one entry per attack:
    ``{"n_correct": {name: k}, "ci95": {name: [low, high]}, "ci_method": "wilson"}`` (for evaluation JSON)."""
    counts = {name: int(flags.sum()) if hasattr(flags, "sum") else sum(bool(v) for v in flags)
              for name, flags in per_sample.items()}
    intervals = {}
    for name, flags in per_sample.items():
        low, high = wilson_interval(counts[name], len(flags))
        intervals[name] = [100.0 * low, 100.0 * high]
    return {"n_correct": counts, "ci95": intervals, "ci_method": "wilson"}


def format_accuracy(k: int, n: int, digits: int = 2) -> str:
    """``"52.50 % [45.6, 59.3] (n=200)"``: the accuracy with its 95 % Wilson interval and n."""
    rec = accuracy_record(k, n)
    low, high = rec["ci95"]
    return f"{rec['accuracy']:.{digits}f} % [{low:.1f}, {high:.1f}] (n={n})"


@dataclass(frozen=True)
class SeedSummary:
    """Mean and sample standard deviation (ddof = 1; NaN for one seed) of a metric over ``n_seeds`` seeds."""

    mean: float
    sd: float
    n_seeds: int

    def __str__(self) -> str:
        return format_seed_summary(self.mean, self.sd, self.n_seeds)


def seed_summary(values: Iterable[float]) -> SeedSummary:
    """Mean ± sample sd over seeds (NaN values are dropped; an empty list gives NaN with 0 seeds)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return SeedSummary(math.nan, math.nan, 0)
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return SeedSummary(mean, sd, len(vals))


def format_seed_summary(mean: Optional[float], sd: Optional[float], n_seeds: Optional[int], digits: int = 2) -> str:
    """``"52.30 ± 0.41 (3 seeds)"``; ``"52.30 (1 seed)"`` without a spread; ``"n/a"`` without a value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    seeds = "" if n_seeds is None else f" ({int(n_seeds)} seed{'s' if int(n_seeds) != 1 else ''})"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}{seeds}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}{seeds}"


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of A against B on the same ``n`` images (accuracies and difference in percent).

    ``both`` / ``only_a`` / ``only_b`` / ``neither``: images both / only A / only B / neither classify
    correctly. ``p_value``: two-sided exact binomial test of ``only_a`` in ``only_a + only_b`` trials,
    ``p = 1/2`` (1.0 without discordant pairs). ``difference = acc_a - acc_b`` and ``diff_ci95`` its
    95 % Newcombe (1998, method 10) interval for paired proportions.
    """

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    acc_a: float
    acc_b: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    difference: float
    diff_ci95: tuple[float, float]
    p_value: float
    test: str = "exact McNemar (two-sided binomial on discordant pairs)"
    diff_ci_method: str = "Newcombe (1998) method 10, paired Wilson"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("ci_a", "ci_b", "diff_ci95"):
            d[key] = list(d[key])
        return d


def newcombe_paired_interval(both: int, only_a: int, only_b: int, neither: int,
                             z: float = Z95) -> tuple[float, float]:
    """95 % interval of ``p_A - p_B`` for paired data as fractions (Newcombe 1998, method 10).

    With Wilson intervals ``(l1, u1)`` of ``p_A = (both + only_a)/n`` and ``(l2, u2)`` of
    ``p_B = (both + only_b)/n``, ``D = p_A - p_B`` and ``phi`` Newcombe's corrected correlation of
    the 2x2 table (with ``A = both*neither - only_a*only_b`` and ``M`` the product of the four
    margins: ``(A - n/2)/sqrt(M)`` if ``A > n/2``, 0 if ``0 <= A <= n/2``, ``A/sqrt(M)`` if ``A < 0``;
    0 when a margin is empty; as in Fagerland, Lydersen & Laake 2013):
    ``low = D - sqrt((p_A-l1)² - 2 phi (p_A-l1)(u2-p_B) + (u2-p_B)²)``,
    ``high = D + sqrt((u1-p_A)² - 2 phi (u1-p_A)(p_B-l2) + (p_B-l2)²)``.
    """
    n = both + only_a + only_b + neither
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    phi = 0.0
    if margins > 0 and (cross > n / 2 or cross < 0):
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    d = p_a - p_b
    dl = math.sqrt(max(0.0, (p_a - l1) ** 2 - 2 * phi * (p_a - l1) * (u2 - p_b) + (u2 - p_b) ** 2))
    du = math.sqrt(max(0.0, (u1 - p_a) ** 2 - 2 * phi * (u1 - p_a) * (p_b - l2) + (p_b - l2) ** 2))
    return max(-1.0, d - dl), min(1.0, d + du)


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test of per-sample correctness ``correct_a`` against ``correct_b`` (same images, same order)."""
    a = [bool(v) for v in correct_a]
    b = [bool(v) for v in correct_b]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired correctness must have the same non-zero length; got {len(a)} and {len(b)}")
    both = sum(1 for u, v in zip(a, b) if u and v)
    only_a = sum(1 for u, v in zip(a, b) if u and not v)
    only_b = sum(1 for u, v in zip(a, b) if v and not u)
    neither = len(a) - both - only_a - only_b
    return mcnemar_from_counts(both, only_a, only_b, neither)


def mcnemar_from_counts(both: int, only_a: int, only_b: int, neither: int) -> McNemarResult:
    """:func:`mcnemar_test` from the four cells of the paired 2x2 table."""
    n = both + only_a + only_b + neither
    if n < 1:
        raise ValueError("the paired table is empty")
    discordant = only_a + only_b
    p_value = (float(_scipy_stats.binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue)
               if discordant else 1.0)
    la, ha = wilson_interval(both + only_a, n)
    lb, hb = wilson_interval(both + only_b, n)
    dl, dh = newcombe_paired_interval(both, only_a, only_b, neither)
    return McNemarResult(n=n, both=both, only_a=only_a, only_b=only_b, neither=neither,
                         acc_a=100.0 * (both + only_a) / n, acc_b=100.0 * (both + only_b) / n,
                         ci_a=(100.0 * la, 100.0 * ha), ci_b=(100.0 * lb, 100.0 * hb),
                         difference=100.0 * (only_a - only_b) / n, diff_ci95=(100.0 * dl, 100.0 * dh),
                         p_value=min(1.0, p_value))


def mean_difference_interval(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                             n_resamples: int = 4999) -> dict[str, Any]:
    """``mean(a) - mean(b)`` of two independent samples and its 95 % bootstrap interval (BCa, scipy.stats.bootstrap).

    For skewed per-sample quantities (e.g. logit MSEs split into successes and failures) where a t interval's
    normality is doubtful. Seeded, so the same data give the same interval.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError(f"each sample needs at least 2 values; got {len(xa)} and {len(xb)}")
    res = _scipy_stats.bootstrap((xa, xb), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis),
                                 n_resamples=n_resamples, confidence_level=0.95, method="BCa", vectorized=True,
                                 random_state=np.random.default_rng(seed))
    return {"difference": float(xa.mean() - xb.mean()), "ci95": [float(res.confidence_interval.low),
            float(res.confidence_interval.high)], "n_a": int(len(xa)), "n_b": int(len(xb)),
            "ci_method": f"BCa bootstrap, {n_resamples} resamples, seed {seed}"}


@dataclass(frozen=True)
class SeedDifference:
    """``mean(a) - mean(b)`` of one metric over seeds, runs paired by seed (see :func:`seed_difference`).

    ``per_seed``: ``a_i - b_i``. ``two_standard_errors``: ``2 sqrt(sd_a²/n + sd_b²/n)``, the band of
    seed noise a difference of two n-seed means stays inside about 95 % of the time. ``ci95``: the paired
    Student-t interval of the per-seed differences (wide for 3 seeds: ``t(0.975, 2) = 4.30``).
    """

    difference: float
    per_seed: tuple[float, ...]
    two_standard_errors: float
    ci95: tuple[float, float]
    n_seeds: int

    @property
    def within_noise(self) -> bool:
        """Whether ``|difference|`` is at most two standard errors of seed noise."""
        return abs(self.difference) <= self.two_standard_errors

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        return {"difference": round(self.difference, digits), "per_seed": [round(d, digits) for d in self.per_seed],
                "two_standard_errors": round(self.two_standard_errors, digits),
                "ci95": [round(v, digits) for v in self.ci95], "n_seeds": self.n_seeds,
                "within_noise": self.within_noise}


def seed_difference(a: Sequence[float], b: Sequence[float]) -> SeedDifference:
    """The difference of a metric between two settings run on the same seeds (``a[i]``, ``b[i]``: seed i).

    ``difference = mean(a) - mean(b)``; seed noise ``2 sqrt(sd_a²/n + sd_b²/n)`` (sample sds, ddof = 1);
    ``ci95 = mean(d) ± t(0.975, n - 1) sd(d) / sqrt(n)`` with ``d_i = a_i - b_i``. Needs two seeds or more.
    """
    xa, xb = [float(v) for v in a], [float(v) for v in b]
    if len(xa) != len(xb):
        raise ValueError(f"a has {len(xa)} seeds and b {len(xb)}; seed_difference pairs them seed by seed")
    n = len(xa)
    if n < 2:
        raise ValueError(f"seed_difference needs at least 2 seeds; got {n}")
    d = [u - v for u, v in zip(xa, xb)]
    sa, sb, sd_d = seed_summary(xa).sd, seed_summary(xb).sd, seed_summary(d).sd
    mean_d = sum(d) / n
    half = float(_scipy_stats.t.ppf(0.975, n - 1)) * sd_d / math.sqrt(n)
    return SeedDifference(difference=mean_d, per_seed=tuple(d), two_standard_errors=2 * math.sqrt((sa ** 2 + sb ** 2) / n),
                          ci95=(mean_d - half, mean_d + half), n_seeds=n)


# ------------------------------------------------------------------- several seeds: per-image differences pooled
@dataclass(frozen=True)
class PairedDifference:
    """One seed's paired difference on ``n`` images, in points: ``difference = 100 mean_i(a_i - b_i)`` and
    ``variance`` the variance of that mean, ``100² var_i(a_i - b_i) / n`` (ddof = 1). ``only_a`` / ``only_b``: the
    discordant images."""

    difference: float
    variance: float
    n: int
    only_a: int
    only_b: int

    @property
    def per_image_variance(self) -> float:
        """``100² var_i(a_i - b_i)``: the variance of one image's difference (points²)."""
        return self.variance * self.n

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        return {"difference": round(self.difference, digits), "variance": round(self.variance, 6), "n": self.n,
                "only_a": self.only_a, "only_b": self.only_b}


def paired_difference(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedDifference:
    """The per-image paired difference of two runs of one seed on the same images (same order).

    With ``d_i = a_i - b_i`` in {-1, 0, 1}, ``b = #(a_i > b_i)``, ``c = #(a_i < b_i)``: ``mean(d) = (b - c) / n`` and
    ``var(d) = (b + c - n mean(d)²) / (n - 1)``; returned in points (×100) and points² (×100²) over ``n``.
    """
    a = [bool(v) for v in correct_a]
    b = [bool(v) for v in correct_b]
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired correctness must have the same length of at least 2; got {len(a)} and {len(b)}")
    n = len(a)
    only_a = sum(1 for u, v in zip(a, b) if u and not v)
    only_b = sum(1 for u, v in zip(a, b) if v and not u)
    mean = (only_a - only_b) / n
    var = (only_a + only_b - n * mean * mean) / (n - 1)
    return PairedDifference(difference=100.0 * mean, variance=1e4 * var / n, n=n, only_a=only_a, only_b=only_b)


@dataclass(frozen=True)
class PooledDifference:
    """Per-image paired differences of ``k`` seeds pooled (see :func:`pool_paired_differences`), in points.

    ``fixed`` / ``fixed_se``: the inverse-variance estimate and its standard error. ``q``, ``df = k - 1``,
    ``q_p_value``: Cochran's heterogeneity test. ``tau2``: DerSimonian-Laird between-seed variance. ``random`` /
    ``random_se``: the random-effects estimate and its Hartung-Knapp standard error (NaN for one seed). The
    primary analysis (:attr:`estimate`, :meth:`interval`) is the random-effects one when Q rejects at
    ``heterogeneity_level``, else the fixed-effect one.
    """

    per_seed: tuple[PairedDifference, ...]
    fixed: float
    fixed_se: float
    q: float
    df: int
    q_p_value: float
    tau2: float
    random: float
    random_se: float
    heterogeneity_level: float

    @property
    def heterogeneous(self) -> bool:
        """Whether Cochran's Q rejects homogeneity at :attr:`heterogeneity_level`."""
        return self.df >= 1 and self.q_p_value < self.heterogeneity_level

    @property
    def estimate(self) -> float:
        return self.random if self.heterogeneous else self.fixed

    @property
    def method(self) -> str:
        if self.heterogeneous:
            return (f"random effects (DerSimonian-Laird tau², Hartung-Knapp-Sidik-Jonkman t interval, {self.df} df): "
                    f"Cochran's Q rejects homogeneity at {self.heterogeneity_level:g}")
        return "fixed effect (inverse-variance pooling of the per-image paired differences over the seeds)"

    def fixed_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """``fixed ± z fixed_se``."""
        half = float(_scipy_stats.norm.ppf(0.5 + confidence / 2)) * self.fixed_se
        return self.fixed - half, self.fixed + half

    def random_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """``random ± t(k - 1) random_se`` (Hartung & Knapp 2001; Sidik & Jonkman 2002); NaN for one seed."""
        if self.df < 1:
            return math.nan, math.nan
        half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, self.df)) * self.random_se
        return self.random - half, self.random + half

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The primary analysis's interval (random effects when heterogeneous, else fixed effect)."""
        return self.random_interval(confidence) if self.heterogeneous else self.fixed_interval(confidence)

    @property
    def per_image_variance(self) -> float:
        """The mean over the seeds of one image's difference variance (points²), for power calculations."""
        return sum(d.per_image_variance for d in self.per_seed) / len(self.per_seed)

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        r = lambda v: None if v is None or not math.isfinite(v) else round(v, digits)  # noqa: E731
        return {"estimate": r(self.estimate), "ci95": [r(v) for v in self.interval()], "method": self.method,
                "heterogeneous": self.heterogeneous, "fixed": r(self.fixed),
                "fixed_ci95": [r(v) for v in self.fixed_interval()], "q": r(self.q), "df": self.df,
                "q_p_value": None if not math.isfinite(self.q_p_value) else round(self.q_p_value, 4),
                "heterogeneity_level": self.heterogeneity_level, "tau2": round(self.tau2, 4),
                "random": r(self.random), "random_ci95": [r(v) for v in self.random_interval()],
                "per_seed": [d.to_dict() for d in self.per_seed],
                "per_image_variance": round(self.per_image_variance, 2)}


HETEROGENEITY_LEVEL = 0.10  # Cochran's Q has little power with a few seeds; 0.10 is the customary level for it


def pool_paired_differences(per_seed: Sequence[PairedDifference], *,
                            heterogeneity_level: float = HETEROGENEITY_LEVEL) -> PooledDifference:
    """Pool the per-image paired differences ``y_s`` (variances ``v_s``) of ``k`` seeds.

    Fixed effect (inverse variance): ``w_s = 1 / v_s``, ``y_F = sum w_s y_s / sum w_s``, ``se_F = 1 / sqrt(sum w_s)``.
    Heterogeneity (Cochran 1954): ``Q = sum w_s (y_s - y_F)²``, chi-squared with ``k - 1`` df under homogeneity.
    Random effects (DerSimonian & Laird 1986): ``tau² = max(0, (Q - (k - 1)) / (sum w_s - sum w_s² / sum w_s))``,
    ``w*_s = 1 / (v_s + tau²)``, ``y_R = sum w*_s y_s / sum w*_s``; Hartung-Knapp-Sidik-Jonkman (Hartung & Knapp
    2001; Sidik & Jonkman 2002): ``se_R² = sum w*_s (y_s - y_R)² / ((k - 1) sum w*_s)``, interval with ``t(k - 1)``.
    A seed whose two runs agree on every image (``v_s = 0``) has no inverse variance: refused.
    """
    diffs = list(per_seed)
    if not diffs:
        raise ValueError("no seed to pool")
    if not 0.0 < heterogeneity_level < 1.0:
        raise ValueError(f"heterogeneity_level={heterogeneity_level!r}: accepted a number in (0, 1)")
    for i, d in enumerate(diffs):
        if not d.variance > 0.0:
            raise ValueError(f"seed {i}: the two runs agree on every one of the {d.n} images (variance 0), so "
                             "inverse-variance pooling is undefined")
    y = np.array([d.difference for d in diffs])
    w = 1.0 / np.array([d.variance for d in diffs])
    k = len(diffs)
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    df = k - 1
    p = float(_scipy_stats.chi2.sf(q, df)) if df >= 1 else math.nan
    c = float(w.sum() - (w ** 2).sum() / w.sum())
    tau2 = max(0.0, (q - df) / c) if df >= 1 and c > 0 else 0.0
    ws = 1.0 / (1.0 / w + tau2)
    random = float((ws * y).sum() / ws.sum())
    random_se = math.sqrt(float((ws * (y - random) ** 2).sum()) / (df * float(ws.sum()))) if df >= 1 else math.nan
    return PooledDifference(per_seed=tuple(diffs), fixed=fixed, fixed_se=float(1.0 / math.sqrt(w.sum())), q=q, df=df,
                            q_p_value=p, tau2=tau2, random=random, random_se=random_se,
                            heterogeneity_level=heterogeneity_level)


@dataclass(frozen=True)
class Equivalence:
    """TOST of a pooled difference against ``±margin`` (points): ``equivalent`` when ``ci90`` lies strictly inside
    ``(-margin, margin)``, the same as ``p_value`` (the larger one-sided p) below 0.05."""

    estimate: float
    ci90: tuple[float, float]
    margin: float
    p_value: float
    equivalent: bool
    method: str

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        return {"estimate": round(self.estimate, digits), "ci90": [round(v, digits) for v in self.ci90],
                "margin": self.margin, "p_value": round(self.p_value, 4), "equivalent": self.equivalent,
                "method": self.method}


def equivalence_test(pooled: PooledDifference, margin: float) -> Equivalence:
    """Two one-sided tests (Schuirmann 1987) at 5 % each of ``H0: delta <= -margin`` and ``H0: delta >= margin`` on
    the primary pooled analysis: ``p = max(P(T >= (est + margin) / se), P(T <= (est - margin) / se))`` with the
    normal (fixed effect) or ``t(k - 1)`` (random effects, Hartung-Knapp) distribution; equivalence when the 90 %
    interval lies inside ``(-margin, margin)``."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
        raise ValueError(f"margin={margin!r}: the equivalence margin must be a positive number of points")
    est = pooled.estimate
    se, dist = ((pooled.random_se, _scipy_stats.t(pooled.df)) if pooled.heterogeneous
                else (pooled.fixed_se, _scipy_stats.norm()))
    p = max(float(dist.sf((est + margin) / se)), float(dist.cdf((est - margin) / se)))
    low, high = pooled.interval(0.90)
    return Equivalence(estimate=est, ci90=(low, high), margin=float(margin), p_value=p,
                       equivalent=-margin < low and high < margin,
                       method=f"TOST at 5 % (90 % interval inside ±{margin:g} points), {pooled.method}")


def bootstrap_over_images(statistic: Callable[[np.ndarray], float], n: int, *, n_resamples: int = 2000,
                          seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap over images (Efron 1979) of ``statistic(indices)``, a number computed from the images
    at ``indices`` (with repeats): ``n_resamples`` draws of ``n`` indices with replacement from a generator seeded
    with ``seed``; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    finite resampled values (``n_undefined`` counts the others). For statistics whose parts share images, such as
    correlations of confusion matrices, where formulas that treat cells as independent do not hold."""
    if n < 2 or n_resamples < 1:
        raise ValueError(f"n={n!r} images and n_resamples={n_resamples!r}: need at least 2 images and 1 resample")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n)))
    values = np.array([float(statistic(rng.integers(0, n, n))) for _ in range(n_resamples)])
    finite = values[np.isfinite(values)]
    low, high = (np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2]) if len(finite)
                 else (math.nan, math.nan))
    return {"estimate": estimate, "ci": [float(low), float(high)], "confidence": confidence, "n": int(n),
            "n_resamples": int(n_resamples), "n_undefined": int(len(values) - len(finite)), "seed": int(seed),
            "method": f"percentile bootstrap over images, {n_resamples} resamples, seed {seed}"}


def minimal_detectable_effect(per_image_variance: float, n_images: int, n_seeds: int, *, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest pooled paired difference (points) a two-sided test at ``alpha`` detects with ``power``, for
    ``n_seeds`` seeds of ``n_images`` images each: ``(z(1 - alpha/2) + z(power)) sqrt(sigma² / (n k))``, with
    ``sigma²`` one image's difference variance (points²) and no between-seed variance (tau² = 0)."""
    z = float(_scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power))
    return z * math.sqrt(per_image_variance / (n_images * n_seeds))


def seeds_needed(effect: float, per_image_variance: float, n_images: int, *, alpha: float = 0.05,
                 power: float = 0.8) -> int:
    """The seeds of ``n_images`` images each for :func:`minimal_detectable_effect` to reach ``|effect|``:
    ``ceil(sigma² (z(1 - alpha/2) + z(power))² / (effect² n))``."""
    if effect == 0:
        raise ValueError("a difference of 0 cannot be detected with any number of seeds")
    z = float(_scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power))
    return max(1, math.ceil(per_image_variance * z * z / (effect * effect * n_images) - 1e-9))


__all__ = ["DIFFERS", "NO_DIFFERENCE", "two_networks_verdict", "Equivalence", "HETEROGENEITY_LEVEL", "McNemarResult", "PairedDifference", "PooledDifference", "SeedDifference",
           "SeedSummary", "Z95", "accuracy_intervals", "accuracy_record", "bootstrap_over_images",
           "equivalence_test", "format_accuracy", "format_seed_summary", "mcnemar_from_counts", "mcnemar_test",
           "mean_difference_interval", "minimal_detectable_effect", "newcombe_paired_interval", "paired_difference",
           "pool_paired_differences", "seed_difference", "seed_summary", "seeds_needed", "wilson_interval"]

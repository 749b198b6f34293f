"""atkit.core.stats against scipy.stats, published worked examples and hand-computed values."""
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as sps

from atkit.core.stats import (HETEROGENEITY_LEVEL, Z95, PairedDifference, accuracy_record, bootstrap_over_images,
                         equivalence_test, format_accuracy, format_seed_summary, mcnemar_from_counts, mcnemar_test,
                         minimal_detectable_effect, newcombe_paired_interval, paired_difference,
                         pool_paired_differences, seed_difference, seed_summary, seeds_needed, wilson_interval)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (52, 100), (4987, 10000), (1, 7)])
def test_wilson_matches_scipy(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12)
    assert high == pytest.approx(ci.high, abs=1e-12)


def test_wilson_margin_on_cifar10_size():
    low, high = wilson_interval(5000, 10000)
    assert (high - low) / 2 == pytest.approx(0.0098, abs=2e-4)  # about ±1 point at 50 % on 10,000 images


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_accuracy_record_and_format():
    rec = accuracy_record(105, 200)
    assert rec["accuracy"] == pytest.approx(52.5)
    assert rec["n"] == 200 and rec["k"] == 105
    ci = sps.binomtest(105, 200).proportion_ci(method="wilson")
    assert rec["ci95"] == pytest.approx([100 * ci.low, 100 * ci.high])
    assert format_accuracy(105, 200) == f"52.50 % [{100 * ci.low:.1f}, {100 * ci.high:.1f}] (n=200)"


def test_seed_summary_matches_sample_std():
    values = [51.2, 52.9, 50.4]
    s = seed_summary(values)
    assert s.mean == pytest.approx(sum(values) / 3)
    assert s.sd == pytest.approx(sps.tstd(values))  # ddof = 1
    assert s.n_seeds == 3
    assert str(s) == f"{s.mean:.2f} ± {s.sd:.2f} (3 seeds)"
    one = seed_summary([50.0, float("nan")])
    assert one.n_seeds == 1 and math.isnan(one.sd)
    assert format_seed_summary(one.mean, one.sd, one.n_seeds) == "50.00 (1 seed)"


@pytest.mark.parametrize("both,only_a,only_b,neither", [(40, 9, 2, 49), (10, 0, 0, 5), (5, 13, 4, 78), (0, 3, 3, 0)])
def test_mcnemar_p_matches_scipy_binomial(both, only_a, only_b, neither):
    r = mcnemar_from_counts(both, only_a, only_b, neither)
    m = only_a + only_b
    expected = 1.0 if m == 0 else min(1.0, 2 * sps.binom.cdf(min(only_a, only_b), m, 0.5))
    assert r.p_value == pytest.approx(expected, rel=1e-12)
    assert r.difference == pytest.approx(100 * (only_a - only_b) / r.n)
    assert r.diff_ci95[0] <= r.difference <= r.diff_ci95[1]


def test_mcnemar_worked_examples():
    # Fagerland, Lydersen & Laake (2013), Bentur et al. data: exact conditional p = 0.070, Newcombe (-0.507, -0.026).
    r = mcnemar_from_counts(1, 1, 7, 12)
    assert r.p_value == pytest.approx(0.0703, abs=1e-4)
    assert r.diff_ci95[0] == pytest.approx(-50.7, abs=0.05) and r.diff_ci95[1] == pytest.approx(-2.6, abs=0.05)
    # Cavo et al. data of the same paper: p = 0.052, Newcombe (-0.119, -0.005).
    r = mcnemar_from_counts(59, 6, 16, 80)
    assert r.p_value == pytest.approx(0.0525, abs=1e-4)
    assert r.diff_ci95[0] == pytest.approx(-11.9, abs=0.05) and r.diff_ci95[1] == pytest.approx(-0.5, abs=0.05)


def test_mcnemar_from_flags_counts_cells():
    a = [1, 1, 0, 0, 1, 1, 1, 0]
    b = [1, 0, 1, 0, 1, 0, 0, 0]
    r = mcnemar_test(a, b)
    assert (r.both, r.only_a, r.only_b, r.neither) == (2, 3, 1, 2)
    assert r.acc_a == pytest.approx(62.5) and r.acc_b == pytest.approx(37.5)
    assert r.to_dict()["diff_ci95"] == list(r.diff_ci95)
    with pytest.raises(ValueError):
        mcnemar_test([1, 0], [1])


def test_paired_interval_narrower_than_unpaired_when_correlated():
    # Two strongly correlated classifiers: the paired interval is much tighter than the independent one.
    low, high = newcombe_paired_interval(480, 30, 10, 480)
    la, ha = wilson_interval(510, 1000)
    lb, hb = wilson_interval(490, 1000)
    d = 0.02
    unpaired_half = math.hypot(0.51 - la, hb - 0.49)
    assert d - low < 0.6 * unpaired_half


def test_mean_difference_interval_matches_welch_on_normal_samples_and_is_seeded():
    import numpy as np
    from scipy import stats as st

    from atkit.core.stats import mean_difference_interval

    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 2.0, 800), rng.normal(0.6, 1.0, 600)
    got = mean_difference_interval(a, b, seed=1)
    assert got["difference"] == pytest.approx(a.mean() - b.mean())
    welch = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got["ci95"][0] == pytest.approx(welch.low, abs=0.03) and got["ci95"][1] == pytest.approx(welch.high, abs=0.03)
    assert mean_difference_interval(a, b, seed=1) == got
    with pytest.raises(ValueError, match="at least 2"):
        mean_difference_interval([1.0], b)


def test_seed_difference_worked_example():
    # a = (40, 42, 44), b = (39, 40, 44): d = (1, 2, 0), mean 1, sd(d) = 1; sd_a = 2, sd_b = sqrt(7)
    r = seed_difference([40, 42, 44], [39, 40, 44])
    assert r.difference == pytest.approx(1.0) and r.per_seed == (1.0, 2.0, 0.0) and r.n_seeds == 3
    assert r.two_standard_errors == pytest.approx(2 * math.sqrt((4 + 7) / 3))
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd(d) / sqrt(3)
    assert r.ci95 == pytest.approx((1 - half, 1 + half))
    assert r.within_noise and r.to_dict()["within_noise"] is True


def test_seed_difference_flags_a_shift_beyond_seed_noise_and_matches_scipy_paired_t():
    a, b = [45.1, 45.6, 44.9], [41.0, 41.3, 40.6]
    r = seed_difference(a, b)
    assert not r.within_noise  # a 4-point shift against seed sds of about 0.3
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert r.ci95 == pytest.approx((ci.low, ci.high))


def test_seed_difference_rejects_unpaired_or_single_seed():
    with pytest.raises(ValueError, match="pairs them seed by seed"):
        seed_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_difference([1], [2])


# ------------------------------------------------------------------- several seeds: per-image differences pooled
def _seed(y, v, n=1000):
    """A seed's paired difference given directly (points, points²): the pooling only reads these."""
    return PairedDifference(difference=y, variance=v, n=n, only_a=0, only_b=0)


def test_paired_difference_by_hand():
    a = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1]  # 3 images only a, none only b
    d = paired_difference(a, b)
    assert (d.only_a, d.only_b, d.n) == (3, 0, 10)
    assert d.difference == pytest.approx(30.0)
    # var(d_i) = (b + c - n mean²) / (n - 1) = (3 - 10 * 0.09) / 9; the mean's variance over n, in points²
    assert d.variance == pytest.approx(1e4 * (2.1 / 9) / 10)
    assert d.variance == pytest.approx(1e4 * np.var(np.subtract(a, b), ddof=1) / 10)
    assert d.per_image_variance == pytest.approx(1e4 * 2.1 / 9)
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1, 0], [1])


def test_pooling_three_seeds_by_hand():
    # y = (1, 2, 4), v = (1, 1, 2): w = (1, 1, 1/2), y_F = 5 / 2.5 = 2, Q = 1 + 0 + 0.5 * 4 = 3 on 2 df,
    # C = 2.5 - 2.25 / 2.5 = 1.6, tau² = (3 - 2) / 1.6 = 0.625; w* = (8/13, 8/13, 8/21), y_R = 23/11.
    seeds = [_seed(1.0, 1.0), _seed(2.0, 1.0), _seed(4.0, 2.0)]
    p = pool_paired_differences(seeds, heterogeneity_level=0.5)
    assert p.fixed == pytest.approx(2.0) and p.fixed_se == pytest.approx(1 / math.sqrt(2.5))
    assert p.q == pytest.approx(3.0) and p.df == 2
    assert p.q_p_value == pytest.approx(math.exp(-1.5))  # chi-squared with 2 df: sf(q) = exp(-q / 2)
    assert p.q_p_value == pytest.approx(sps.chi2.sf(3.0, 2))
    assert p.tau2 == pytest.approx(0.625)
    assert p.random == pytest.approx(23 / 11)
    ws = [Fraction(8, 13), Fraction(8, 13), Fraction(8, 21)]
    hk = sum(w * (y - Fraction(23, 11)) ** 2 for w, y in zip(ws, (1, 2, 4))) / (2 * sum(ws))  # Hartung-Knapp se²
    assert p.random_se == pytest.approx(math.sqrt(float(hk)))
    half = sps.t.ppf(0.975, 2) * math.sqrt(float(hk))
    assert p.heterogeneous and p.estimate == p.random
    assert p.interval() == pytest.approx((23 / 11 - half, 23 / 11 + half))
    # At the customary 0.10 level Q = 3 (p = 0.22) does not reject: the fixed-effect interval is the primary one.
    q = pool_paired_differences(seeds)
    assert q.heterogeneity_level == HETEROGENEITY_LEVEL == 0.10 and not q.heterogeneous
    assert q.estimate == pytest.approx(2.0)
    assert q.interval() == pytest.approx((2 - Z95 / math.sqrt(2.5), 2 + Z95 / math.sqrt(2.5)))
    assert q.to_dict()["ci95"] == [round(v, 2) for v in q.interval()]


def test_hartung_knapp_is_weighted_least_squares_with_estimated_scale():
    """The random-effects estimate and its Hartung-Knapp se: the intercept of a weighted regression on a constant
    with weights 1 / (v + tau²) and the residual mean square as scale (another route to the same numbers)."""
    y, v = np.array([0.3, -1.2, 2.5, 0.8]), np.array([0.2, 0.5, 0.3, 0.9])
    p = pool_paired_differences([_seed(a, b) for a, b in zip(y, v)], heterogeneity_level=0.99)
    sw = np.sqrt(1 / (v + p.tau2))
    coef, rss, *_ = np.linalg.lstsq(sw[:, None], sw * y, rcond=None)
    assert p.random == pytest.approx(coef[0])
    assert p.random_se == pytest.approx(math.sqrt(rss[0] / (len(y) - 1) / (sw ** 2).sum()))


def test_heterogeneity_switches_the_primary_interval_at_the_stated_level():
    # Two seeds with v = 1: Q = x² / 2 on 1 df; chi2(1) at 0.10 rejects above 2.7055, so x = 2.3262 is the edge.
    edge = math.sqrt(2 * sps.chi2.isf(0.10, 1))
    below = pool_paired_differences([_seed(0.0, 1.0), _seed(edge - 0.01, 1.0)])
    above = pool_paired_differences([_seed(0.0, 1.0), _seed(edge + 0.01, 1.0)])
    assert not below.heterogeneous and below.interval() == below.fixed_interval()
    assert above.heterogeneous and above.interval() == above.random_interval()
    assert above.interval()[1] - above.interval()[0] > 5 * (above.fixed_interval()[1] - above.fixed_interval()[0])
    one = pool_paired_differences([_seed(0.4, 0.04)])
    assert one.df == 0 and not one.heterogeneous and one.interval() == pytest.approx((0.4 - Z95 * 0.2, 0.4 + Z95 * 0.2))
    with pytest.raises(ValueError, match="agree on every one"):
        pool_paired_differences([_seed(0.0, 1.0), _seed(0.0, 0.0)])


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    # One seed, se 0.5: the 90 % interval is d ± 0.8224, inside ±1 exactly when |d| < 0.1776.
    z = sps.norm.ppf(0.95)
    for d, inside in ((0.17, True), (0.18, False), (-0.17, True), (-0.18, False)):
        e = equivalence_test(pool_paired_differences([_seed(d, 0.25)]), 1.0)
        assert e.equivalent is inside
        assert e.ci90 == pytest.approx((d - z * 0.5, d + z * 0.5))
        p = max(sps.norm.sf((d + 1) / 0.5), sps.norm.cdf((d - 1) / 0.5))  # the two one-sided tests
        assert e.p_value == pytest.approx(p) and (e.p_value < 0.05) is inside
    hetero = pool_paired_differences([_seed(-1.0, 0.01), _seed(1.0, 0.01)])  # far apart: random effects, t(1)
    e = equivalence_test(hetero, 1.0)
    assert hetero.heterogeneous and not e.equivalent and "random effects" in e.method
    with pytest.raises(ValueError, match="margin"):
        equivalence_test(hetero, 0)


def test_bootstrap_over_images_is_seeded_and_matches_hand_resampling():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.0, 400)
    got = bootstrap_over_images(lambda idx: x[idx].mean(), len(x), n_resamples=500, seed=7)
    hand = np.random.default_rng(7)
    values = [x[hand.integers(0, 400, 400)].mean() for _ in range(500)]
    assert got["estimate"] == pytest.approx(x.mean())
    assert got["ci"] == pytest.approx(list(np.quantile(values, [0.025, 0.975])))
    assert bootstrap_over_images(lambda idx: x[idx].mean(), len(x), n_resamples=500, seed=7) == got
    se = x.std(ddof=1) / 20
    assert got["ci"] == pytest.approx([x.mean() - Z95 * se, x.mean() + Z95 * se], abs=0.02)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", random_state=1).confidence_interval
    assert got["ci"] == pytest.approx([ref.low, ref.high], abs=0.02)
    odd = bootstrap_over_images(lambda idx: float("nan") if idx[0] % 2 else 1.0, 10, n_resamples=50, seed=0)
    assert 0 < odd["n_undefined"] < 50 and odd["ci"] == [1.0, 1.0]


def test_minimal_detectable_effect_and_seeds_needed_by_hand():
    z = Z95 + sps.norm.ppf(0.8)  # 1.95996 + 0.84162
    assert minimal_detectable_effect(900.0, 10000, 4) == pytest.approx(z * math.sqrt(900 / 40000))
    k = seeds_needed(0.28, 950.0, 10000)
    assert k == math.ceil(950 * z * z / (0.28 ** 2 * 10000)) == 10
    # The edge on both sides: k seeds reach the effect, k - 1 do not.
    assert minimal_detectable_effect(950.0, 10000, k) <= 0.28 < minimal_detectable_effect(950.0, 10000, k - 1)
    assert seeds_needed(-0.28, 950.0, 10000) == k
    with pytest.raises(ValueError, match="cannot be detected"):
        seeds_needed(0.0, 950.0, 10000)

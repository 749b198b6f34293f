"""atkit.stats against scipy.stats and published worked examples."""
import math

import pytest
from scipy import stats as sps

from atkit.stats import (accuracy_record, format_accuracy, format_seed_summary, mcnemar_from_counts, mcnemar_test,
                         newcombe_paired_interval, seed_difference, seed_summary, wilson_interval)


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

    from atkit.stats import mean_difference_interval

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

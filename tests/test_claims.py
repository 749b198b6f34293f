"""The verdicts on the papers' claims (atkit.experiments.claims): the learned-model guard, the scale every verdict states, the
rules for published cells and for two trained networks, and one hand-made table per claim on both sides of its edge."""
import json
import math
import random

import numpy as np
import pytest

from atkit.experiments.claims import (CONSISTENT_WITH_SIZE, DIFFERS, DOES_NOT_REPRODUCE, INCONCLUSIVE, NO_DIFFERENCE,
                          NOT_LEARNED, PER_IMAGE_MISSING, REPRODUCES, SIGN_OPEN_SIZE_EXCLUDED, SIZE_EXCLUDED,
                          ClaimCheck, accuracy_difference, all_or_none_share, appropriate_eta_helps_both,
                          bonferroni_z, boundary_budget_hardly_moves_robustness, budget_axis,
                          collapse_threshold_ranges, confusion_correlations, hard_labels_collapse_under_autoattack,
                          independent_difference_interval, interval_verdict, judge_check, judged_at,
                          learning_minimum, model_learned, moderate_boundary_budget_helps_clean,
                          nonboundary_needs_full_budget, per_image_data_missing, perception_mse_claim,
                          published_difference_verdict, rpat_table1_direction, similar_failure_patterns,
                          transfer_follows_surrogate_success, two_networks_verdict, verdict)
from atkit.core.stats import Z95
from atkit.core.stats import wilson_interval as wilson_fraction
from atkit.core.utils import ConfigError


def wilson_interval(correct, n):  # the guard's interval, in percent (one implementation: atkit.core.stats)
    return tuple(100.0 * v for v in wilson_fraction(correct, n))


@pytest.mark.parametrize("classes, minimum", [(10, 20.0), (8, 22.5), (100, 11.0), (2, 75.0), (4, 37.5)])
def test_the_minimum_is_the_larger_of_one_and_a_half_chance_and_chance_plus_ten(classes, minimum):
    assert learning_minimum(classes) == pytest.approx(minimum)


def test_wilson_interval_by_hand():
    lo, hi = wilson_interval(50, 100)
    assert (lo, hi) == (pytest.approx(40.383, abs=1e-3), pytest.approx(59.617, abs=1e-3))
    lo, hi = wilson_interval(0, 10)  # 0 successes: from 0, to z^2 / (n + z^2)
    assert lo == 0.0 and hi == pytest.approx(100 * Z95 ** 2 / (10 + Z95 ** 2))


def test_a_model_at_chance_did_not_learn():
    smoke = model_learned(12.5, 8, n=48, name="pgd_at")  # the smoke run of the issue: 12.5 % over 8 classes
    assert not smoke.learned
    assert "pgd_at" in smoke.describe() and "minimum 22.5%" in smoke.describe() and "n=48" in smoke.describe()
    assert model_learned(30.0, 10, n=1000).learned
    assert not model_learned(19.9, 10).learned and model_learned(20.0, 10).learned  # the minimum is inclusive
    # Above the minimum on 8 images (2 right) is still compatible with chance: the interval decides.
    few = model_learned(25.0, 10, n=8)
    assert few.lower95 < 10.0 and not few.learned
    assert not model_learned(float("nan"), 10).learned


def test_verdicts_on_models_that_learned_and_on_models_that_did_not():
    good, bad = model_learned(60.0, 10, n=500, name="a"), model_learned(10.0, 10, n=500, name="b")
    assert verdict(True, [good]) == (True, "agrees")
    assert verdict(False, [good]) == (False, "disagrees")
    assert verdict(None, [good]) == (None, "inconclusive")
    agrees, text = verdict(True, [good, bad])
    assert agrees is None and text.startswith(NOT_LEARNED) and "b: clean 10.0%" in text and "a:" not in text
    check = judge_check({"claim": "c", "measured": "m", "agrees": True}, [bad])
    assert check["claim"] == "c" and check["measured"] == "m" and check["agrees"] is None
    assert check["verdict"].startswith("not judged: model did not learn")


def test_interval_verdict_reads_the_side_of_zero_and_refuses_unlearned_models():
    assert interval_verdict(0.2, 1.5, "positive") == REPRODUCES
    assert interval_verdict(-1.5, -0.2, "negative") == REPRODUCES
    assert interval_verdict(-1.5, -0.2, "positive") == DOES_NOT_REPRODUCE
    assert interval_verdict(0.1, 0.3, "negative") == DOES_NOT_REPRODUCE
    assert interval_verdict(-0.4, 0.9, "positive") == INCONCLUSIVE
    assert interval_verdict(0.0, 0.9, "positive") == INCONCLUSIVE  # touching zero is not excluding it
    chance = model_learned(10.5, 10, n=2000, name="standard")
    assert interval_verdict(0.2, 1.5, "positive", models=[chance]).startswith(NOT_LEARNED)
    assert interval_verdict(0.2, 1.5, "positive", models=[model_learned(60.0, 10, n=2000)]) == REPRODUCES
    with pytest.raises(ValueError, match="expected"):
        interval_verdict(0.1, 0.2, "up")
    with pytest.raises(ValueError, match="low end"):
        interval_verdict(0.3, 0.2, "positive")


def test_every_verdict_names_the_scale_it_was_judged_at():
    one = model_learned(43.3, 10, n=2000, name="pgd_at", robust=26.96, robust_label="PGD-20")
    assert judged_at([one]) == "clean 43.3 %, PGD-20 27.0 %"
    four = [model_learned(c, 10, n=2000, name=str(c), robust=r, robust_label="PGD-10")
            for c, r in ((41.3, 26.8), (45.15, 26.2), (34.95, 27.0), (42.5, 27.65))]
    assert judged_at(four) == "clean 35.0-45.2 %, PGD-10 26.2-27.7 %, 4 models"  # halves up, as printed
    assert judged_at([model_learned(60.0, 10)]) == "clean 60.0 %" and judged_at([]) == ""


def test_published_difference_verdict_is_directional_only_where_the_paper_claims_a_direction():
    scale = "clean 42.1 %, PGD-20 26.7 %"
    v = lambda lo, hi, pub, direction: published_difference_verdict(lo, hi, pub, direction, scale=scale)
    # A claimed improvement (RPAT, Table 1, PGD-AT clean +0.28): the side of zero decides the sign.
    assert v(0.01, 0.5, 0.28, "positive") == f"{REPRODUCES} at this scale ({scale})"
    assert v(0.0, 0.5, 0.28, "positive").startswith(INCONCLUSIVE)  # touching zero is not excluding it
    assert v(-0.5, -0.01, 0.28, "positive").startswith(DOES_NOT_REPRODUCE)
    # Zero inside: the published size decides between "inconclusive" and "size excluded" (ends included).
    assert v(-0.69, 0.52, 1.26, "positive").startswith(SIGN_OPEN_SIZE_EXCLUDED)
    assert v(-0.69, 0.52, 0.52, "positive").startswith(INCONCLUSIVE)
    assert v(-0.69, 0.52, 0.5201, "positive").startswith(SIGN_OPEN_SIZE_EXCLUDED)
    # No claimed direction (TRADES AA -0.15, a score the paper marks as not improved): size only, never a sign.
    assert v(-0.69, 0.52, -0.15, None) == f"{CONSISTENT_WITH_SIZE} at this scale ({scale})"
    assert v(-0.69, 0.52, -0.69, None).startswith(CONSISTENT_WITH_SIZE)
    assert v(-0.69, 0.52, -0.6901, None).startswith(SIZE_EXCLUDED)
    assert v(0.1, 0.9, -0.15, None).startswith(SIZE_EXCLUDED)  # a sure gain, but no claim of one to reproduce
    chance = model_learned(10.5, 10, n=2000, name="base")
    assert published_difference_verdict(0.1, 0.9, 0.28, "positive", models=[chance]).startswith(NOT_LEARNED)
    fine = model_learned(42.0, 10, n=2000, robust=26.0, robust_label="PGD-20")
    assert published_difference_verdict(0.1, 0.9, 0.28, "positive", models=[fine]).endswith(
        "(clean 42.0 %, PGD-20 26.0 %)")
    with pytest.raises(ValueError, match="low end"):
        v(0.3, 0.2, 0.0, None)


def test_rpat_table1_claims_a_direction_only_for_compared_improved_cells():
    assert rpat_table1_direction("clean", 0.28) == "positive"  # PGD-AT and TRADES clean
    assert rpat_table1_direction("aa", 1.26) == "positive"
    assert rpat_table1_direction("aa", -0.15) is None  # TRADES AA: marked as not improved
    assert rpat_table1_direction("clean", 0.0) is None
    assert rpat_table1_direction("pgd20", 0.68) is None  # "not involved in the comparison"
    assert rpat_table1_direction("cw", 1.0) is None


def test_one_network_per_arm_differs_or_not_never_reproduces():
    assert two_networks_verdict(0.0499) == DIFFERS
    assert two_networks_verdict(0.05) == NO_DIFFERENCE
    assert "reproduc" not in DIFFERS + NO_DIFFERENCE


# ============================================================================================
# One function per paper claim: hand-made tables whose verdict is known, just inside and just outside the rule.
# ============================================================================================

LEARNED = model_learned(60.0, 10, n=1000, name="good")
CHANCE = model_learned(10.0, 10, n=1000, name="at_chance")


def _newcombe(k_a, k_b, n, z=Z95):
    """Newcombe's independent interval (1998, method 10) written out, in points: Wilson ends combined in quadrature."""
    (la, ua), (lb, ub) = wilson_fraction(k_a, n, z), wilson_fraction(k_b, n, z)
    pa, pb = k_a / n, k_b / n
    return 100 * (pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)), \
        100 * (pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def _first(ks, pred):
    """The first k of ``ks`` for which ``pred(k)`` holds (the edge of a rule)."""
    return next(k for k in ks if pred(k))


def _jsonable(check):
    d = check.to_dict()
    assert set(d) == {"claim", "source", "measured", "agrees", "verdict", "rule", "numbers", "judged_at"}
    assert json.loads(json.dumps(d))["verdict"] == check.verdict
    return d


def _assert_verdict(check, text):
    assert isinstance(check, ClaimCheck)
    assert check.verdict.startswith(text), (check.verdict, check.measured)
    assert check.agrees is {REPRODUCES: True, DOES_NOT_REPRODUCE: False}.get(text)
    if text in (REPRODUCES, DOES_NOT_REPRODUCE, INCONCLUSIVE):  # a verdict about the paper names its scale
        assert check.verdict.startswith(f"{text} at this scale (clean "), check.verdict
        assert check.judged_at["text"] and check.judged_at["text"] in check.verdict
    _jsonable(check)


def test_independent_difference_interval_matches_newcombe_1998_table_2():
    lo, hi = independent_difference_interval(56, 70, 48, 80)  # Newcombe (1998), example (a): 0.0524 to 0.3339
    assert (lo, hi) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
    lo, hi = independent_difference_interval(9, 10, 3, 10)  # example (c): 0.1705 to 0.8090
    assert (lo, hi) == (pytest.approx(0.1705, abs=1e-4), pytest.approx(0.8090, abs=1e-4))


def test_accuracy_difference_paired_is_narrower_and_checks_its_input():
    unpaired = accuracy_difference(55.0, 50.0, 1000)
    assert unpaired["ci"] == pytest.approx(list(_newcombe(550, 500, 1000)))
    a = [True] * 550 + [False] * 450
    b = [True] * 500 + [False] * 500  # b's right answers are a subset of a's: 50 discordant pairs
    paired = accuracy_difference(55.0, 50.0, 1000, correct_a=a, correct_b=b)
    assert paired["difference"] == pytest.approx(5.0) and paired["method"].startswith("Newcombe paired")
    assert unpaired["ci"][0] < paired["ci"][0] < 5.0 < paired["ci"][1] < unpaired["ci"][1]
    with pytest.raises(ValueError, match="whole number"):
        accuracy_difference(55.05, 50.0, 1000)
    with pytest.raises(ValueError, match="does not match"):
        accuracy_difference(55.0, 50.0, 1000, correct_a=b, correct_b=b)
    assert bonferroni_z(1) == Z95 and bonferroni_z(3) == pytest.approx(2.3940, abs=1e-4)


# -------------------------------------------------------------------------------- RPAT, Fig. 2
def _mse_table(mean_success, mean_failure, n_success=200, n_failure=200, spread=0.2, seed=0):
    rng = random.Random(seed)
    mse = [max(0.0, rng.gauss(mean_success, spread)) for _ in range(n_success)]
    mse += [max(0.0, rng.gauss(mean_failure, spread)) for _ in range(n_failure)]
    return mse, [True] * n_success + [False] * n_failure


def test_perception_mse_claim_reads_the_bootstrap_interval_per_training():
    mse, success = _mse_table(1.0, 0.8)  # failure < success, far beyond noise
    check = perception_mse_claim("pgd_at", mse, success, LEARNED)
    _assert_verdict(check, REPRODUCES)
    assert check.numbers["ci95"][1] < 0 and check.numbers["direction"] == "failure<success"
    assert check.source == "RPAT, Fig. 2"
    _assert_verdict(perception_mse_claim("standard", mse, success, LEARNED), DOES_NOT_REPRODUCE)  # paper: failure >
    _assert_verdict(perception_mse_claim("random_noise", *_mse_table(0.8, 1.0), LEARNED), REPRODUCES)
    # Failure below success in the means, but by less than the noise: inconclusive, not "agrees".
    mse, success = _mse_table(1.0, 0.99, n_success=30, n_failure=30, seed=1)
    check = perception_mse_claim("pgd_at", mse, success, LEARNED)
    assert check.numbers["failure_minus_success"] < 0 and check.numbers["ci95"][0] < 0 < check.numbers["ci95"][1]
    _assert_verdict(check, INCONCLUSIVE)


def test_perception_mse_claim_not_judged_without_a_learned_model_or_both_groups():
    mse, success = _mse_table(1.0, 0.8)
    check = perception_mse_claim("pgd_at", mse, success, CHANCE)
    _assert_verdict(check, NOT_LEARNED)
    assert "at_chance" in check.verdict and check.numbers["direction"] == "failure<success"
    mse, success = _mse_table(1.0, 0.8, n_failure=1)
    _assert_verdict(perception_mse_claim("pgd_at", mse, success, LEARNED), "not judged: fewer than 2")
    _assert_verdict(perception_mse_claim("pgd_at", mse, success, CHANCE), NOT_LEARNED)  # the guard comes first
    with pytest.raises(ConfigError, match="trades"):
        perception_mse_claim("trades", mse, success, LEARNED)


def test_perception_mse_among_clean_correct_images_contrasts_flipped_with_survived():
    # Images never classified correctly have the lowest MSE and would count as failures over all images; among the
    # clean-correct ones the flipped images have the higher MSE: the two rows can disagree, each by its own rule.
    rng = random.Random(0)
    mse = [rng.gauss(m, 0.05) for m, k in ((0.1, 200), (1.0, 100), (0.6, 100)) for _ in range(k)]
    success = [False] * 300 + [True] * 100
    clean = [False] * 200 + [True] * 200
    all_images = perception_mse_claim("pgd_at", mse, success, LEARNED)
    _assert_verdict(all_images, REPRODUCES)  # failure (mean about 0.4) < success (0.6)
    among = perception_mse_claim("pgd_at", mse, success, LEARNED, clean_correct=clean)
    _assert_verdict(among, DOES_NOT_REPRODUCE)  # flipped (1.0) > survived (0.6)
    assert among.numbers["n_failure"] == 100 and among.numbers["subset"] == "clean-correct images"
    assert "flipped" in among.claim and "clean-correct" in among.claim and among.measured.startswith("flipped ")
    with pytest.raises(ValueError, match="clean-correct flags"):
        perception_mse_claim("pgd_at", mse, success, LEARNED, clean_correct=clean[:10])


# -------------------------------------------------------------------------------- RAAT, Fig. 2 and 5b
def _row(variant, clean, aa, b=1.0, nb=1.0, eta=0.1):
    return {"variant": variant, "boundary_scale": b, "nonboundary_scale": nb, "eta": eta, "clean_acc": clean,
            "aa_acc": aa}


def test_budget_axis_keeps_one_axis_at_the_partition_eta():
    rows = [_row("b0", 60, 40, b=0.0), _row("b1", 60, 40), _row("n0", 60, 40, nb=0.0), _row("x", 60, 40, b=0.5, eta=0.3)]
    assert [r["variant"] for r in budget_axis(rows, "boundary_scale", 0.1)] == ["b0", "b1"]
    assert [r["variant"] for r in budget_axis(rows, "nonboundary_scale", 0.1)] == ["n0", "b1"]
    with pytest.raises(ValueError, match="varied"):
        budget_axis(rows, "eta", 0.1)


def test_boundary_budget_hardly_moves_robustness_is_an_equivalence_test():
    n, tol = 10000, 2.0
    base = 4500  # 45.00 % robust accuracy at budget 0
    # Reproduces up to the largest spread whose 95 % interval stays inside +-2 points; one image more does not.
    k = _first(range(base, base + 400), lambda k: _newcombe(k, base, n)[1] > tol) - 1
    axis = lambda k: [_row("b0", 60, base / 100, b=0.0), _row("b1", 60, k / 100)]
    _assert_verdict(boundary_budget_hardly_moves_robustness(axis(k), n, 10, tolerance=tol), REPRODUCES)
    _assert_verdict(boundary_budget_hardly_moves_robustness(axis(k + 1), n, 10, tolerance=tol), INCONCLUSIVE)
    # Does not reproduce once the interval lies wholly beyond 2 points.
    k = _first(range(base, base + 1000), lambda k: _newcombe(k, base, n)[0] > tol)
    _assert_verdict(boundary_budget_hardly_moves_robustness(axis(k), n, 10, tolerance=tol), DOES_NOT_REPRODUCE)
    _assert_verdict(boundary_budget_hardly_moves_robustness(axis(k - 1), n, 10, tolerance=tol), INCONCLUSIVE)
    # Three budgets: three pairs, so "some pair beyond" uses Bonferroni's z; the 95 % edge is not enough.
    three = [_row("b0", 60, base / 100, b=0.0), _row("b.5", 60, base / 100, b=0.5), _row("b1", 60, k / 100)]
    z3 = bonferroni_z(3)
    k3 = _first(range(base, base + 1000), lambda k: _newcombe(k, base, n, z3)[0] > tol)
    assert k3 > k
    three[2]["aa_acc"] = (k3 - 1) / 100
    _assert_verdict(boundary_budget_hardly_moves_robustness(three, n, 10, tolerance=tol), INCONCLUSIVE)
    three[2]["aa_acc"] = k3 / 100
    _assert_verdict(boundary_budget_hardly_moves_robustness(three, n, 10, tolerance=tol), DOES_NOT_REPRODUCE)
    # Not judged when a variant did not learn, or with one budget only.
    chance = [_row("b0", 10.0, 45.0, b=0.0), _row("b1", 60, 45.0)]
    _assert_verdict(boundary_budget_hardly_moves_robustness(chance, n, 10), NOT_LEARNED)
    _assert_verdict(boundary_budget_hardly_moves_robustness(chance[1:], n, 10), "not judged: fewer than 2")
    with pytest.raises(ConfigError, match="robust_tolerance"):
        boundary_budget_hardly_moves_robustness(axis(k), n, 10, tolerance=-1)


def test_boundary_budget_equivalence_uses_the_paired_interval_when_flags_are_given():
    n = 1000
    rows = [_row("b0", 60, 45.0, b=0.0), _row("b1", 60, 45.5)]
    flags = {"b0": {"aa_acc": [True] * 450 + [False] * 550}, "b1": {"aa_acc": [True] * 455 + [False] * 545}}
    _assert_verdict(boundary_budget_hardly_moves_robustness(rows, n, 10), INCONCLUSIVE)  # unpaired: +-4 points
    check = boundary_budget_hardly_moves_robustness(rows, n, 10, correct=flags)
    _assert_verdict(check, REPRODUCES)  # 5 discordant images of 1,000: the paired interval is about +-1 point
    assert check.numbers["pairs"][0]["method"].startswith("Newcombe paired")


def test_moderate_boundary_budget_helps_clean_needs_a_gain_beyond_noise():
    n, full = 1000, 500
    axis = lambda k: [_row("b0", 40.0, 40, b=0.0), _row("b.5", k / 10, 40, b=0.5), _row("b1", full / 10, 40)]
    k = _first(range(full, full + 200), lambda k: _newcombe(k, full, n)[0] > 0)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k), n, 10), REPRODUCES)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k - 1), n, 10), INCONCLUSIVE)
    k = _first(range(full, full - 200, -1), lambda k: _newcombe(k, full, n)[1] < 0)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k), n, 10), DOES_NOT_REPRODUCE)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k + 1), n, 10), INCONCLUSIVE)
    # A stated minimum gain moves the edge: the gain must surely exceed it.
    k2 = _first(range(full, full + 300), lambda k: _newcombe(k, full, n)[0] > 3.0)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k2 - 1), n, 10, min_gain=3.0), INCONCLUSIVE)
    _assert_verdict(moderate_boundary_budget_helps_clean(axis(k2), n, 10, min_gain=3.0), REPRODUCES)
    rows = axis(k2)
    rows[1]["clean_acc"] = 10.0  # the moderate budget at chance
    _assert_verdict(moderate_boundary_budget_helps_clean(rows, n, 10), NOT_LEARNED)
    _assert_verdict(moderate_boundary_budget_helps_clean([rows[0], rows[2]], n, 10), "not judged: no budget")


def test_nonboundary_needs_full_budget():
    n, full = 1000, 450
    axis = lambda k, mid=440: [_row("n0", 60, k / 10, nb=0.0), _row("n.5", 60, mid / 10, nb=0.5),
                               _row("n1", 60, full / 10)]
    k = _first(range(full, full - 200, -1), lambda k: _newcombe(full, k, n)[0] > 0)
    _assert_verdict(nonboundary_needs_full_budget(axis(k), n, 10), REPRODUCES)
    _assert_verdict(nonboundary_needs_full_budget(axis(k + 1), n, 10), INCONCLUSIVE)
    # A smaller budget surely more robust than eps (Bonferroni over the two smaller budgets) contradicts it.
    z2 = bonferroni_z(2)
    mid = _first(range(full, full + 300), lambda m: _newcombe(m, full, n, z2)[0] > 0)
    _assert_verdict(nonboundary_needs_full_budget(axis(k, mid), n, 10), DOES_NOT_REPRODUCE)
    # One image fewer: observed 5 points above eps but within noise, so eps still counts as the most robust.
    _assert_verdict(nonboundary_needs_full_budget(axis(k, mid - 1), n, 10), REPRODUCES)
    rows = axis(k)
    rows[2]["clean_acc"] = 10.0
    _assert_verdict(nonboundary_needs_full_budget(rows, n, 10), NOT_LEARNED)
    _assert_verdict(nonboundary_needs_full_budget(rows[2:], n, 10), "not judged")


def test_appropriate_eta_helps_both_needs_a_gain_in_both():
    """RAAT, Fig. 5b: "better performance on both perturbed and clean data": a clean gain and a robust gain."""
    n, ref = 10000, _row("pgd_at", 60.0, 45.0)
    z = bonferroni_z(2)
    clean = _first(range(6000, 6300), lambda k: _newcombe(k, 6000, n, z)[0] > 0)
    aa = _first(range(4500, 4800), lambda k: _newcombe(k, 4500, n, z)[0] > 0)
    etas = lambda c, a: [_row("e.1", c / 100, a / 100, b=0.1, eta=0.1), _row("e.5", 55.0, 45.0, b=0.5, eta=0.5)]
    _assert_verdict(appropriate_eta_helps_both(etas(clean, aa), ref, n, 10), REPRODUCES)
    _assert_verdict(appropriate_eta_helps_both(etas(clean - 1, aa), ref, n, 10), INCONCLUSIVE)
    _assert_verdict(appropriate_eta_helps_both(etas(clean, aa - 1), ref, n, 10), INCONCLUSIVE)
    # A clean gain with a robust change within noise is no longer enough (the old rule allowed a 2-point loss).
    _assert_verdict(appropriate_eta_helps_both(etas(clean, 4450), ref, n, 10), INCONCLUSIVE)
    # Every eta surely not better on one of the two: not reproduced; the edge is the robust interval's upper end.
    lost = _first(range(4500, 4200, -1), lambda k: _newcombe(k, 4500, n, z)[1] < 0)
    worse = lambda a: [_row("e.1", 62.0, a / 100, b=0.1, eta=0.1), _row("e.5", 55.0, 46.0, b=0.5, eta=0.5)]
    _assert_verdict(appropriate_eta_helps_both(worse(lost), ref, n, 10), DOES_NOT_REPRODUCE)
    _assert_verdict(appropriate_eta_helps_both(worse(lost + 1), ref, n, 10), INCONCLUSIVE)
    check = appropriate_eta_helps_both(worse(lost), ref, n, 10, robust_label="APGD-CE+DLR")
    assert "better" not in check.claim and "both clean and robust" in check.claim
    assert "APGD-CE+DLR" in check.verdict
    _assert_verdict(appropriate_eta_helps_both(etas(clean, aa), _row("pgd_at", 10.0, 5.0), n, 10), NOT_LEARNED)
    _assert_verdict(appropriate_eta_helps_both([], ref, n, 10), "not judged: no eta")


# -------------------------------------------------------------------------------- DUCAT, Fig. 2, 3, 4 and 8
def test_all_or_none_share_reads_the_wilson_interval_against_80_percent():
    n = 1000
    overlap = lambda k: {"n": n, "count_by_defeated": [k - 100, 200, n - k - 200, 0, 100]}
    k = _first(range(800, 1000), lambda k: wilson_fraction(k, n)[0] > 0.8)
    _assert_verdict(all_or_none_share(overlap(k), [LEARNED]), REPRODUCES)
    _assert_verdict(all_or_none_share(overlap(k - 1), [LEARNED]), INCONCLUSIVE)  # 0.8 < share, within noise
    assert (k - 1) / n > 0.8
    k = _first(range(800, 500, -1), lambda k: wilson_fraction(k, n)[1] < 0.8)
    _assert_verdict(all_or_none_share(overlap(k), [LEARNED]), DOES_NOT_REPRODUCE)
    _assert_verdict(all_or_none_share(overlap(k + 1), [LEARNED]), INCONCLUSIVE)
    _assert_verdict(all_or_none_share(overlap(900), [LEARNED, CHANCE]), NOT_LEARNED)
    with pytest.raises(ConfigError, match="all_or_none_threshold"):
        all_or_none_share(overlap(900), [LEARNED], threshold=80)


def _transfer(cells):
    """Rows of CrossAttack.transfer_table for two models from ``{(s, t): (fooled_success, n_s, fooled_failure, n_f)}``."""
    rows = []
    for (s, t), (fs, ns, ff, nf) in cells.items():
        rows += [{"surrogate": s, "target": t, "subset": "success", "n": ns, "fooled": fs},
                 {"surrogate": s, "target": t, "subset": "failure", "n": nf, "fooled": ff}]
    for m in ("a", "b"):  # the diagonal (100 / 0 by construction) is left out by the rule
        rows += [{"surrogate": m, "target": m, "subset": "success", "n": 50, "fooled": 50},
                 {"surrogate": m, "target": m, "subset": "failure", "n": 50, "fooled": 0}]
    return rows


def test_transfer_follows_surrogate_success_cell_by_cell():
    strong = (90, 100, 10, 100)
    # Every cell surely above 0 reproduces; one cell whose interval holds 0 makes it inconclusive.
    k = _first(range(50, 100), lambda k: independent_difference_interval(k, 100, 40, 100)[0] > 0)
    _assert_verdict(transfer_follows_surrogate_success(_transfer({("a", "b"): strong, ("b", "a"): (k, 100, 40, 100)}),
                                                       [LEARNED]), REPRODUCES)
    check = transfer_follows_surrogate_success(_transfer({("a", "b"): strong, ("b", "a"): (k - 1, 100, 40, 100)}),
                                               [LEARNED])
    _assert_verdict(check, INCONCLUSIVE)
    assert check.numbers["mean_fooled_success"] > check.numbers["mean_fooled_failure"]  # the old mean rule: agrees
    # One cell surely reversed (Bonferroni over the 2 cells) contradicts it.
    z2 = bonferroni_z(2)
    k = _first(range(40, 0, -1), lambda k: independent_difference_interval(k, 100, 40, 100, z2)[1] < 0)
    _assert_verdict(transfer_follows_surrogate_success(_transfer({("a", "b"): strong, ("b", "a"): (k, 100, 40, 100)}),
                                                       [LEARNED]), DOES_NOT_REPRODUCE)
    _assert_verdict(transfer_follows_surrogate_success(_transfer({("a", "b"): strong, ("b", "a"): (k + 1, 100, 40, 100)}),
                                                       [LEARNED]), INCONCLUSIVE)
    _assert_verdict(transfer_follows_surrogate_success(_transfer({("a", "b"): strong, ("b", "a"): strong}),
                                                       [LEARNED, CHANCE]), NOT_LEARNED)
    empty = _transfer({("a", "b"): (0, 0, 10, 100), ("b", "a"): (0, 0, 10, 100)})
    _assert_verdict(transfer_follows_surrogate_success(empty, [LEARNED]), "not judged: no surrogate")


def _confusions(pattern, n_per_class=60, wrong=30, seed=0, classes=10):
    """Labels and predictions where ``wrong`` of each class's images go to ``pattern(c, i)`` (the rest correct)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    pred = y.copy()
    for c in range(classes):
        idx = rng.choice(np.flatnonzero(y == c), wrong, replace=False)
        pred[idx] = [pattern(c, i) % classes for i in range(wrong)]
    return y, pred


def test_confusion_correlations_by_hand():
    y, a = _confusions(lambda c, i: c + 1 + (i % 3 == 0))
    _, b = _confusions(lambda c, i: c + 1 + (i % 2 == 0), seed=1)
    mats = []
    for pred in (a, b):
        m = np.zeros((10, 10))
        for t, p in zip(y, pred):
            m[t, p] += 1
        mats.append(m[~np.eye(10, dtype=bool)])
    assert confusion_correlations(y, {"a": a, "b": b}, 10) == {"a / b": pytest.approx(np.corrcoef(*mats)[0, 1])}


def test_similar_failure_patterns_against_a_standard_model_bootstrapped_over_images():
    y, at1 = _confusions(lambda c, i: c + 1 + (i % 5 == 0), seed=0)
    _, at2 = _confusions(lambda c, i: c + 1 + (i % 4 == 0), seed=1)
    _, std = _confusions(lambda c, i: c + 3 + (i % 2), seed=2)  # confuses other classes
    models = [LEARNED]
    check = similar_failure_patterns(y, {"a": at1, "b": at2}, {"standard": std}, 10, models, n_resamples=300)
    _assert_verdict(check, REPRODUCES)
    r = confusion_correlations(y, {"a": at1, "b": at2, "s": std}, 10)
    assert check.numbers["difference"] == pytest.approx(r["a / b"] - (r["a / s"] + r["b / s"]) / 2)
    low, high = check.numbers["ci95"]
    assert 0 < low < high
    assert "bootstrap over images" in check.measured and check.numbers["bootstrap"]["n_resamples"] == 300
    # The same data, same seed: the same interval (the bootstrap is seeded).
    again = similar_failure_patterns(y, {"a": at1, "b": at2}, {"standard": std}, 10, models, n_resamples=300)
    assert again.numbers["ci95"] == check.numbers["ci95"]
    # AT models that fail differently, each like the standard model in part: below the baseline.
    _, split1 = _confusions(lambda c, i: c + 1, seed=3)
    _, split2 = _confusions(lambda c, i: c + 2, seed=4)
    _, mixed = _confusions(lambda c, i: c + 1 + (i % 2), seed=5)
    _assert_verdict(similar_failure_patterns(y, {"a": split1, "b": split2}, {"standard": mixed}, 10, models,
                                             n_resamples=300), DOES_NOT_REPRODUCE)
    # Every model with the same confusions as the standard one: no more alike than the baseline.
    _, same1 = _confusions(lambda c, i: c + 1 + (i % 3 == 0), seed=6)
    _, same2 = _confusions(lambda c, i: c + 1 + (i % 3 == 0), seed=7)
    _, same3 = _confusions(lambda c, i: c + 1 + (i % 3 == 0), seed=8)
    flat = similar_failure_patterns(y, {"a": same1, "b": same2}, {"standard": same3}, 10, models, n_resamples=300)
    _assert_verdict(flat, INCONCLUSIVE)
    assert flat.numbers["ci95"][0] <= 0 <= flat.numbers["ci95"][1]
    # Not judged: no baseline, a model that did not learn, or the per-image predictions not saved.
    _assert_verdict(similar_failure_patterns(y, {"a": at1, "b": at2}, None, 10, models), "not judged: no baseline")
    _assert_verdict(similar_failure_patterns(y, {"a": at1, "b": at2}, {"standard": std}, 10, [LEARNED, CHANCE]),
                    NOT_LEARNED)
    missing = per_image_data_missing("c", "DUCAT, Fig. 8", "r", "python -m atkit notebook x", [LEARNED])
    assert missing.verdict == f"{PER_IMAGE_MISSING} (rerun: python -m atkit notebook x)" and missing.agrees is None
    assert per_image_data_missing("c", "s", "r", "cmd", [CHANCE]).verdict.startswith(NOT_LEARNED)


def _toy(published, adaptive=(30.0, 10.0), base_pgd=40.0, base_aa=36.0, hard_clean=60.0):
    """Toy-case rows: the base model, and the hard-label model's (PGD-10, AutoAttack) under each protocol."""
    rows = [{"model": "pgd_at", "protocol": "-", "clean_acc": 60.0, "pgd_acc": base_pgd, "aa_acc": base_aa}]
    for protocol, (pgd, aa) in (("published", published), ("adaptive", adaptive)):
        rows.append({"model": f"hard-label DUCAT [{protocol}]", "protocol": protocol, "variant": "hard-label DUCAT",
                     "clean_acc": hard_clean, "pgd_acc": pgd, "aa_acc": aa})
    return rows


def test_hard_labels_collapse_under_autoattack_within_one_protocol():
    n, thr = 1000, 10.0
    judge = lambda rows, **kw: hard_labels_collapse_under_autoattack(rows, "pgd_at", n, 10, threshold=thr, **kw)
    _assert_verdict(judge(_toy((50.0, 10.0))), REPRODUCES)
    # The collapse margin: the gap's interval must lie above 10 points.
    aa = _first(range(400, 0, -1), lambda k: _newcombe(500, k, n)[0] > thr)
    _assert_verdict(judge(_toy((50.0, aa / 10))), REPRODUCES)
    _assert_verdict(judge(_toy((50.0, (aa + 1) / 10))), INCONCLUSIVE)
    below = _first(range(400, 500), lambda k: _newcombe(500, k, n)[1] < thr)
    _assert_verdict(judge(_toy((50.0, below / 10))), DOES_NOT_REPRODUCE)
    _assert_verdict(judge(_toy((50.0, (below - 1) / 10))), INCONCLUSIVE)
    # ...and beyond the base model's own gap (MOVER): a base with a gap as large is no contrast.
    _assert_verdict(judge(_toy((50.0, 20.0), base_pgd=50.0, base_aa=20.0)), INCONCLUSIVE)
    _assert_verdict(judge(_toy((50.0, 20.0), base_pgd=70.0, base_aa=10.0)), DOES_NOT_REPRODUCE)
    # Both accuracies under the same protocol: a low adaptive AutoAttack accuracy after an equally low adaptive
    # PGD-10 is no collapse, whatever PGD-10 gave under the published protocol (50 points here).
    check = judge(_toy((50.0, 48.0), adaptive=(12.0, 10.0)), protocol="adaptive")
    _assert_verdict(check, DOES_NOT_REPRODUCE)
    assert check.numbers["hard_gap"]["difference"] == pytest.approx(2.0) and "adaptive" in check.claim
    assert "PGD-10 12.0% vs AA 10.0% (adaptive)" in check.measured
    _assert_verdict(judge(_toy((50.0, 48.0), adaptive=(40.0, 10.0)), protocol="adaptive"), REPRODUCES)
    _assert_verdict(judge(_toy((50.0, 10.0), hard_clean=10.0)), NOT_LEARNED)
    _assert_verdict(judge(_toy((50.0, 10.0))[:1]), "not judged: no hard-label")
    # Without a base model only the margin is checked.
    _assert_verdict(hard_labels_collapse_under_autoattack(_toy((50.0, 10.0))[1:], None, n, 10), REPRODUCES)


def test_collapse_verdict_by_threshold():
    """The verdict for every threshold: the ranges agree with the rule applied at a threshold inside each."""
    assert collapse_threshold_ranges((2.97, 8.81), (-2.11, 5.81)) == [
        {"verdict": INCONCLUSIVE, "from": 0.0, "to": 8.81}, {"verdict": DOES_NOT_REPRODUCE, "from": 8.81, "to": 100.0}]
    assert collapse_threshold_ranges((2.97, 8.81), (0.5, 5.0)) == [
        {"verdict": REPRODUCES, "from": 0.0, "to": 2.97}, {"verdict": INCONCLUSIVE, "from": 2.97, "to": 8.81},
        {"verdict": DOES_NOT_REPRODUCE, "from": 8.81, "to": 100.0}]
    assert collapse_threshold_ranges((2.97, 8.81), (-3.0, -1.0)) == [
        {"verdict": DOES_NOT_REPRODUCE, "from": 0.0, "to": 100.0}]
    assert collapse_threshold_ranges((-1.0, 5.0)) == [
        {"verdict": INCONCLUSIVE, "from": 0.0, "to": 5.0}, {"verdict": DOES_NOT_REPRODUCE, "from": 5.0, "to": 100.0}]
    rows = _toy((50.0, 38.0), base_pgd=40.0, base_aa=39.0)
    first = hard_labels_collapse_under_autoattack(rows, "pgd_at", 1000, 10)
    ranges = first.numbers["threshold_ranges"]
    assert [r["verdict"] for r in ranges] == [REPRODUCES, INCONCLUSIVE, DOES_NOT_REPRODUCE]
    for r in ranges:
        for t in (r["from"] + 0.01, (r["from"] + r["to"]) / 2, r["to"] - 0.01):
            _assert_verdict(hard_labels_collapse_under_autoattack(rows, "pgd_at", 1000, 10, threshold=t), r["verdict"])
    assert "verdict by collapse threshold: below" in first.measured


def test_the_scale_rounds_accuracies_as_printed():
    assert judged_at([model_learned(43.3, 10, robust=26.94999873638153, robust_label="PGD-20")]) == \
        "clean 43.3 %, PGD-20 27.0 %"  # 539 of 2,000 as a float32 mean
    assert judged_at([model_learned(43.34, 10, robust=26.94, robust_label="PGD-20")]) == "clean 43.3 %, PGD-20 26.9 %"

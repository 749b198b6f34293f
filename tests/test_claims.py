"""The learned-model guard of the notebooks' verdicts (atkit.claims): the stated minimum, the interval, and
the verdict that refuses to judge models at chance level."""
import pytest

from atkit.claims import (DOES_NOT_REPRODUCE, INCONCLUSIVE, NOT_LEARNED, REPRODUCES, interval_verdict, judge_check,
                          learning_minimum, model_learned, verdict)
from atkit.stats import Z95
from atkit.stats import wilson_interval as wilson_fraction


def wilson_interval(correct, n):  # the guard's interval, in percent (one implementation: atkit.stats)
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


# ============================================================================================
# One function per paper claim: hand-made tables whose verdict is known, just inside and just outside the rule.
# ============================================================================================
import json
import math
import random

from atkit.claims import (ClaimCheck, all_or_none_share, accuracy_difference, appropriate_eta_helps_both,
                          bonferroni_z, boundary_budget_hardly_moves_robustness, budget_axis, correlation_interval,
                          hard_labels_collapse_under_autoattack, independent_difference_interval,
                          moderate_boundary_budget_helps_clean, nonboundary_needs_full_budget, perception_mse_claim,
                          similar_failure_patterns, transfer_follows_surrogate_success)
from atkit.utils import ConfigError

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
    assert set(d) == {"claim", "source", "measured", "agrees", "verdict", "rule", "numbers"}
    assert json.loads(json.dumps(d))["verdict"] == check.verdict
    return d


def _assert_verdict(check, text):
    assert isinstance(check, ClaimCheck)
    assert check.verdict.startswith(text), (check.verdict, check.measured)
    assert check.agrees is {REPRODUCES: True, DOES_NOT_REPRODUCE: False}.get(text)
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


def test_appropriate_eta_helps_both_clean_gain_without_robust_loss():
    n, ref = 10000, _row("pgd_at", 60.0, 45.0)
    z = bonferroni_z(2)
    clean = _first(range(6000, 6300), lambda k: _newcombe(k, 6000, n, z)[0] > 0)
    # Robust loss: the edge where the interval of the change still lies above -2 points.
    aa = _first(range(4500, 4200, -1), lambda k: _newcombe(k, 4500, n, z)[0] <= -2.0) + 1
    etas = lambda c, a: [_row("e.1", c / 100, a / 100, b=0.1, eta=0.1), _row("e.5", 55.0, 45.0, b=0.5, eta=0.5)]
    _assert_verdict(appropriate_eta_helps_both(etas(clean, aa), ref, n, 10), REPRODUCES)
    _assert_verdict(appropriate_eta_helps_both(etas(clean - 1, aa), ref, n, 10), INCONCLUSIVE)
    _assert_verdict(appropriate_eta_helps_both(etas(clean, aa - 1), ref, n, 10), INCONCLUSIVE)
    # Every eta surely worse in clean accuracy (or surely losing more than 2 points of robustness): does not.
    worse = [_row("e.1", 58.0, 45.0, b=0.1, eta=0.1), _row("e.5", 62.0, 40.0, b=0.5, eta=0.5)]
    _assert_verdict(appropriate_eta_helps_both(worse, ref, n, 10), DOES_NOT_REPRODUCE)
    worse[1]["aa_acc"] = 44.0  # loses 1 point only: no longer surely beyond the tolerance
    _assert_verdict(appropriate_eta_helps_both(worse, ref, n, 10), INCONCLUSIVE)
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


def test_similar_failure_patterns_reads_fishers_interval():
    cells = 90  # 10 classes: 90 off-diagonal cells
    edge = math.tanh(Z95 / math.sqrt(cells - 3))  # r whose 95 % interval starts at 0
    assert correlation_interval(edge, cells)[0] == pytest.approx(0.0, abs=1e-9)
    _assert_verdict(similar_failure_patterns({"a / b": 0.9, "a / c": edge + 0.01}, cells, [LEARNED]), REPRODUCES)
    _assert_verdict(similar_failure_patterns({"a / b": 0.9, "a / c": edge - 0.01}, cells, [LEARNED]), INCONCLUSIVE)
    neg = -math.tanh(bonferroni_z(2) / math.sqrt(cells - 3))  # the Bonferroni edge on the negative side
    _assert_verdict(similar_failure_patterns({"a / b": 0.9, "a / c": neg - 0.01}, cells, [LEARNED]), DOES_NOT_REPRODUCE)
    _assert_verdict(similar_failure_patterns({"a / b": 0.9, "a / c": neg + 0.01}, cells, [LEARNED]), INCONCLUSIVE)
    _assert_verdict(similar_failure_patterns({"a / b": 0.9, "a / c": float("nan")}, cells, [LEARNED]), REPRODUCES)
    _assert_verdict(similar_failure_patterns({"a / b": float("nan")}, cells, [LEARNED]), "not judged: no pair")
    _assert_verdict(similar_failure_patterns({"a / b": 0.9}, cells, [CHANCE]), NOT_LEARNED)


def _toy(hard_pgd, hard_aa, base_pgd=40.0, base_aa=36.0, adaptive_aa=None, hard_clean=60.0):
    rows = [{"model": "pgd_at", "protocol": "-", "clean_acc": 60.0, "pgd_acc": base_pgd, "aa_acc": base_aa}]
    for protocol, aa in (("published", hard_aa), ("adaptive", hard_aa if adaptive_aa is None else adaptive_aa)):
        rows.append({"model": f"hard-label DUCAT [{protocol}]", "protocol": protocol, "variant": "hard-label DUCAT",
                     "clean_acc": hard_clean, "pgd_acc": hard_pgd if protocol == "published" else 30.0,
                     "aa_acc": aa})
    return rows


def test_hard_labels_collapse_under_autoattack():
    n, thr = 1000, 10.0
    judge = lambda rows, **kw: hard_labels_collapse_under_autoattack(rows, "pgd_at", n, 10, threshold=thr, **kw)
    _assert_verdict(judge(_toy(50.0, 10.0)), REPRODUCES)
    # The collapse margin: the gap's interval must lie above 10 points.
    aa = _first(range(400, 0, -1), lambda k: _newcombe(500, k, n)[0] > thr)
    _assert_verdict(judge(_toy(50.0, aa / 10)), REPRODUCES)
    _assert_verdict(judge(_toy(50.0, (aa + 1) / 10)), INCONCLUSIVE)
    _assert_verdict(judge(_toy(50.0, 46.0)), DOES_NOT_REPRODUCE)  # a 4-point gap: surely below 10
    # ...and beyond the base model's own gap (MOVER): a base with a gap as large is no contrast.
    _assert_verdict(judge(_toy(50.0, 20.0, base_pgd=50.0, base_aa=20.0)), INCONCLUSIVE)
    _assert_verdict(judge(_toy(50.0, 20.0, base_pgd=70.0, base_aa=10.0)), DOES_NOT_REPRODUCE)
    # The adaptive protocol: PGD-10 from the published row, AutoAttack from the adaptive one.
    check = judge(_toy(50.0, 48.0, adaptive_aa=10.0), protocol="adaptive")
    _assert_verdict(check, REPRODUCES)
    assert check.numbers["hard_gap"]["difference"] == pytest.approx(40.0) and "adaptive" in check.claim
    _assert_verdict(judge(_toy(50.0, 10.0, hard_clean=10.0)), NOT_LEARNED)
    _assert_verdict(judge(_toy(50.0, 10.0)[:1]), "not judged: no hard-label")
    # Without a base model only the margin is checked.
    _assert_verdict(hard_labels_collapse_under_autoattack(_toy(50.0, 10.0)[1:], None, n, 10), REPRODUCES)

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

"""RPAT's claims: the MSE perception of failure and success cases (RPAT, Fig. 2) and the directions its Table 1
claims for the +RPAT rows."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from ...core.stats import mean_difference_interval
from ...core.utils import ConfigError
from .core import DOES_NOT_REPRODUCE, REPRODUCES, ClaimCheck, Learned, interval_verdict, judge

PERCEPTION_MSE_SOURCE = "RPAT, Fig. 2"
#: The paper's order of failure and success MSE per training method (RPAT, Sec. 3 and Fig. 2).
PERCEPTION_MSE_PAPER = {"standard": "failure>success", "random_noise": "failure>success", "pgd_at": "failure<success"}


def perception_mse_claim(training: str, mse: Sequence[float], success: Sequence[bool], model: Learned, *,
                         clean_correct: Optional[Sequence[bool]] = None, seed: int = 0,
                         n_resamples: int = 4999) -> ClaimCheck:
    """RPAT, Fig. 2: after clean or random-noise training the failure cases' logit MSE exceeds the success
    cases' (failure > success); after PGD-AT it is below (failure < success).

    ``mse`` and ``success`` are per test image (the perturbed copy classified correctly or not). With
    ``clean_correct`` (per image) the contrast is taken among the clean-correct images only: those the perturbation
    flipped (failure) against those that survived it (success), so that images the model never got right do not
    enter the failure group. Rule: the 95 % BCa bootstrap interval of ``mean(failure MSE) − mean(success MSE)``
    (:func:`atkit.core.stats.mean_difference_interval`, seeded) read by :func:`interval_verdict`: reproduces when it
    lies on the paper's side of zero, not reproduced when on the other, inconclusive when it holds zero. Not judged
    with fewer than 2 success or 2 failure cases, or when ``model`` did not learn.
    """
    if training not in PERCEPTION_MSE_PAPER:
        raise ConfigError(f"training={training!r}: the paper's direction is known for {sorted(PERCEPTION_MSE_PAPER)}")
    paper = PERCEPTION_MSE_PAPER[training]
    values, flags = [float(v) for v in mse], [bool(v) for v in success]
    if len(values) != len(flags):
        raise ValueError(f"{len(values)} MSE values but {len(flags)} success flags")
    subset = "all images"
    if clean_correct is not None:
        keep = [bool(v) for v in clean_correct]
        if len(keep) != len(values):
            raise ValueError(f"{len(values)} MSE values but {len(keep)} clean-correct flags")
        values = [v for v, k in zip(values, keep) if k]
        flags = [f for f, k in zip(flags, keep) if k]
        subset = "clean-correct images"
    ok = [v for v, f in zip(values, flags) if f]
    bad = [v for v, f in zip(values, flags) if not f]
    mean_ok = sum(ok) / len(ok) if ok else float("nan")
    mean_bad = sum(bad) / len(bad) if bad else float("nan")
    direction = None if not ok or not bad else ("failure>success" if mean_bad > mean_ok else "failure<success")
    numbers: dict[str, Any] = {"training": training, "subset": subset, "mse_success": mean_ok, "mse_failure": mean_bad,
                               "n_success": len(ok), "n_failure": len(bad), "direction": direction,
                               "paper_direction": paper, "failure_minus_success": None, "ci95": None}
    if clean_correct is None:
        rule = ("95 % BCa bootstrap interval of mean failure MSE - mean success MSE: reproduces when it excludes 0 on "
                "the paper's side, not reproduced on the other side, inconclusive when it holds 0")
        claim = f"{training}: {paper.replace('>', ' MSE > ').replace('<', ' MSE < ')} MSE"
    else:
        rule = ("among clean-correct images, 95 % BCa bootstrap interval of mean flipped MSE - mean survived MSE: "
                "reproduces when it excludes 0 on the paper's side, not reproduced on the other side, inconclusive "
                "when it holds 0")
        words = paper.replace("failure", "flipped").replace("success", "survived")
        claim = f"{training}: {words.replace('>', ' MSE > ').replace('<', ' MSE < ')} MSE among clean-correct images"
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
    if measured is not None and clean_correct is not None:
        measured = measured.replace("failure", "flipped").replace("success", "survived")
    if missing is not None or not model.learned:
        return judge(claim, PERCEPTION_MSE_SOURCE, rule, [model], measured=measured, numbers=numbers, missing=missing)
    low, high = numbers["ci95"]
    text = interval_verdict(low, high, "positive" if paper == "failure>success" else "negative")
    return judge(claim, PERCEPTION_MSE_SOURCE, rule, [model], reproduces=text == REPRODUCES,
                 contradicts=text == DOES_NOT_REPRODUCE, measured=measured, numbers=numbers)


# ------------------------------------------------------------------------------------ RPAT, Table 1 (+RPAT rows)
#: The columns RPAT, Table 1 compares: "the best clean accuracy, AA robustness, as well mean and NRR ... are marked
#: in bold, while individual scores not improved are marked with underline"; PGD-20 selects the best checkpoint and
#: the final columns only show the absence of robust overfitting: "these fields are not involved in the comparison"
#: (RPAT, Sec. 5.2).
RPAT_COMPARED_METRICS = ("clean", "aa", "mean", "nrr")


def rpat_table1_direction(metric: str, published_difference: float) -> Optional[str]:
    """The direction RPAT, Table 1 claims for one cell (``"positive"``) or None.

    The paper claims that adding its term improves clean accuracy and robustness together ("concurrently improving
    clean accuracy and adversarial robustness", Sec. 1) and marks each compared score the term did not improve
    (Sec. 5.2). So a cell claims an improvement only when its column is compared (:data:`RPAT_COMPARED_METRICS`)
    and the table shows one (e.g. CIFAR-10 PGD-AT clean +0.28, AA +1.26); a column outside the comparison (PGD-20,
    +0.68) or a score the table marks as not improved (TRADES AA, -0.15) carries no claimed direction, and is
    judged by the size of its difference alone (:func:`published_difference_verdict`).
    """
    if metric in RPAT_COMPARED_METRICS and published_difference > 0:
        return "positive"
    return None


__all__ = ["PERCEPTION_MSE_PAPER", "PERCEPTION_MSE_SOURCE", "RPAT_COMPARED_METRICS", "perception_mse_claim",
           "rpat_table1_direction"]

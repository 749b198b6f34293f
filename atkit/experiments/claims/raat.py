"""RAAT's claims on boundary samples: the budget of boundary and non-boundary samples (RAAT, Fig. 2, as its
App. C.1 describes it) and the partition factor eta (RAAT, Fig. 5b)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from ...core.stats import Z95
from .core import (ClaimCheck, Learned, accuracy_difference, bonferroni_z, check_points, interval_text, judge,
                   model_learned)

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


def _learned_rows(rows: Iterable[Mapping[str, Any]], n: int, num_classes: int, metric: str = "aa_acc",
                  label: str = "AutoAttack") -> list[Learned]:
    """Each row's model: learned or not, with its clean and ``metric`` accuracy (the scale a verdict states)."""
    return [model_learned(float(r["clean_acc"]), num_classes, n=n, name=str(r["variant"]),
                          robust=None if r.get(metric) is None else float(r[metric]), robust_label=label) for r in rows]


def boundary_budget_hardly_moves_robustness(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                            tolerance: float = 2.0, metric: str = "aa_acc",
                                            correct: Optional[Correctness] = None,
                                            robust_label: str = "AutoAttack") -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "applying perturbations of different intensities to boundary samples can hardly
    impact the final robustness".

    ``axis``: the boundary-budget rows (:func:`budget_axis` with ``"boundary_scale"``), each with ``variant``,
    ``clean_acc`` and ``metric`` (percent on ``n`` images). ``tolerance``: the points within which two robust
    accuracies count as the same (the paper gives no number; an equivalence margin). Rule, over every pair of
    budgets: reproduces when every pair's 95 % interval of the difference lies inside ``[−tolerance, tolerance]``
    (equivalence, intersection-union: no correction); not reproduced when some pair's interval (Bonferroni over the
    pairs) lies wholly outside it; inconclusive otherwise.
    """
    tolerance = check_points("robust_tolerance", tolerance)
    claim = "boundary budget hardly moves robustness"
    rule = (f"every pair of boundary budgets: 95 % interval of the {metric} difference inside +-{tolerance:g} points "
            f"-> reproduces; some pair's interval (Bonferroni) wholly beyond +-{tolerance:g} -> not reproduced")
    models = _learned_rows(axis, n, num_classes, metric, robust_label)
    if len(axis) < 2:
        return judge(claim, BOUNDARY_SOURCE, rule, models, missing="fewer than 2 boundary budgets")
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
                + interval_text(max(diffs, key=lambda d: abs(d["difference"]))))
    return judge(claim, BOUNDARY_SOURCE, rule, models, reproduces=inside, contradicts=beyond, measured=measured,
                 numbers={"spread": spread, "tolerance": tolerance, "metric": metric, "pairs": diffs})


def moderate_boundary_budget_helps_clean(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                         min_gain: float = 0.0, correct: Optional[Correctness] = None,
                                         robust_label: str = "AutoAttack") -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "moderate perturbations for [boundary samples] do benefit the generalization on
    clean data".

    ``axis``: the boundary-budget rows (:func:`budget_axis`); the moderate budgets are those strictly between
    0 and 1, compared with the full budget (scale 1) in clean accuracy. Rule, with Bonferroni over the ``k``
    moderate budgets: reproduces when some budget's interval of its clean gain lies above ``min_gain`` points
    (default 0: any gain beyond noise); not reproduced when every budget's interval lies below ``min_gain``;
    inconclusive otherwise.
    """
    min_gain = check_points("clean_tolerance", min_gain)
    claim = "a moderate boundary budget helps clean accuracy"
    rule = (f"clean gain of each budget in (0, 1) over the full budget, 95 % interval Bonferroni over the budgets: "
            f"some interval above {min_gain:g} -> reproduces; every interval below {min_gain:g} -> not reproduced")
    full = [r for r in axis if float(r["boundary_scale"]) == 1.0]
    moderate = [r for r in axis if 0.0 < float(r["boundary_scale"]) < 1.0]
    models = _learned_rows(list(moderate) + full, n, num_classes, label=robust_label)
    if not full or not moderate:
        return judge(claim, BOUNDARY_SOURCE, rule, models, missing="no budget strictly between 0 and eps, or no "
                                                                   "full-budget run")
    z = bonferroni_z(len(moderate))
    diffs = [{**_diff(r, full[0], "clean_acc", n, correct, z=z), "scale": float(r["boundary_scale"])}
             for r in moderate]
    best = max(diffs, key=lambda d: d["difference"])
    measured = (f"clean {float(full[0]['clean_acc']) + best['difference']:.2f} at {best['scale']:g} x eps vs "
                f"{float(full[0]['clean_acc']):.2f} at eps ({interval_text(best)}, Bonferroni over {len(diffs)})")
    return judge(claim, BOUNDARY_SOURCE, rule, models, measured=measured,
                 reproduces=any(d["ci"][0] > min_gain for d in diffs),
                 contradicts=all(d["ci"][1] < min_gain for d in diffs),
                 numbers={"min_gain": min_gain, "z": z, "differences": diffs})


def nonboundary_needs_full_budget(axis: Sequence[Mapping[str, Any]], n: int, num_classes: int, *,
                                  metric: str = "aa_acc", correct: Optional[Correctness] = None,
                                  robust_label: str = "AutoAttack") -> ClaimCheck:
    """RAAT, Fig. 2 (App. C.1): "to learn the basic adversarial robustness, it is vital that [non-boundary
    samples] are fully perturbed".

    ``axis``: the non-boundary-budget rows (:func:`budget_axis` with ``"nonboundary_scale"``). Rule:
    reproduces when the 95 % interval of (full budget − smallest budget) in ``metric`` lies above 0 and no
    smaller budget is more robust than the full one beyond noise; not reproduced when some smaller budget's interval
    of (it − full) lies above 0 (Bonferroni over the smaller budgets); inconclusive otherwise.
    """
    claim = "non-boundary samples need the full eps"
    rule = (f"{metric}: 95 % interval of full budget - smallest budget above 0 and no smaller budget better beyond "
            "noise -> reproduces; some smaller budget better (Bonferroni) -> not reproduced")
    full = [r for r in axis if float(r["nonboundary_scale"]) == 1.0]
    smaller = [r for r in axis if float(r["nonboundary_scale"]) < 1.0]
    models = _learned_rows(list(smaller) + full, n, num_classes, metric, robust_label)
    if not full or not smaller:
        return judge(claim, BOUNDARY_SOURCE, rule, models, missing="no non-boundary budget below eps, or no "
                                                                   "full-budget run")
    loss = _diff(full[0], smaller[0], metric, n, correct)
    z = bonferroni_z(len(smaller))
    better = [{**_diff(r, full[0], metric, n, correct, z=z), "scale": float(r["nonboundary_scale"])} for r in smaller]
    contradicts = any(d["ci"][0] > 0 for d in better)
    measured = (f"{metric} {float(full[0][metric]):.2f} at eps, {float(smaller[0][metric]):.2f} at "
                f"{float(smaller[0]['nonboundary_scale']):g} x eps (eps - smallest {interval_text(loss)}); best "
                f"{max(float(r[metric]) for r in axis):.2f}")
    return judge(claim, BOUNDARY_SOURCE, rule, models, measured=measured, contradicts=contradicts,
                 reproduces=loss["ci"][0] > 0 and not contradicts,
                 numbers={"metric": metric, "full_minus_smallest": loss, "smaller_minus_full": better})




def appropriate_eta_helps_both(eta_rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any], n: int,
                               num_classes: int, *, min_gain: float = 0.0, robust_metric: str = "aa_acc",
                               correct: Optional[Correctness] = None, robust_label: str = "AutoAttack") -> ClaimCheck:
    """RAAT, Fig. 5b: "an appropriate partition of boundary and non-boundary samples helps achieve better
    performance on both perturbed and clean data".

    ``eta_rows``: one row per η of the sweep (``variant``, ``eta``, ``clean_acc``, ``robust_metric``);
    ``reference``: PGD-AT's row. "Better on both" is read as both: rule, Bonferroni over the ``k`` values of η:
    reproduces when some η's clean gain interval lies above ``min_gain`` (default 0) *and* its robust gain interval
    above 0; not reproduced when every η is surely not better on at least one of the two (its clean interval below
    ``min_gain`` or its robust interval below 0); inconclusive otherwise.
    """
    min_gain = check_points("clean_tolerance", min_gain)
    claim = "an appropriate eta beats PGD-AT in both clean and robust accuracy"
    rule = (f"per eta vs PGD-AT, 95 % intervals Bonferroni over the etas: clean gain above {min_gain:g} and "
            f"{robust_metric} gain above 0 for some eta -> reproduces; every eta clean below {min_gain:g} or "
            f"{robust_metric} below 0 -> not reproduced")
    models = _learned_rows(list(eta_rows) + [reference], n, num_classes, robust_metric, robust_label)
    if not eta_rows:
        return judge(claim, ETA_SOURCE, rule, models, missing="no eta in the sweep")
    z = bonferroni_z(len(eta_rows))
    per_eta = []
    for r in eta_rows:
        c, a = _diff(r, reference, "clean_acc", n, correct, z=z), _diff(r, reference, robust_metric, n, correct, z=z)
        per_eta.append({"eta": float(r["eta"]), "variant": r["variant"], "clean": c, "robust": a,
                        "better": c["ci"][0] > min_gain and a["ci"][0] > 0.0,
                        "worse": c["ci"][1] < min_gain or a["ci"][1] < 0.0})
    changes = ", ".join(f"{e['eta']:g}: {e['clean']['difference']:+.1f}/{e['robust']['difference']:+.1f}"
                        for e in per_eta)
    measured = (f"clean/{robust_metric} change against PGD-AT (clean {float(reference['clean_acc']):.2f}, "
                f"{robust_metric} {float(reference[robust_metric]):.2f}) per eta: {changes}")
    return judge(claim, ETA_SOURCE, rule, models, measured=measured,
                 reproduces=any(e["better"] for e in per_eta), contradicts=all(e["worse"] for e in per_eta),
                 numbers={"min_gain": min_gain, "z": z, "per_eta": per_eta})


__all__ = ["BOUNDARY_SOURCE", "ETA_SOURCE", "appropriate_eta_helps_both", "boundary_budget_hardly_moves_robustness",
           "budget_axis", "moderate_boundary_budget_helps_clean", "nonboundary_needs_full_budget"]

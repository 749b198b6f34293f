"""DUCAT's motivation claims (DUCAT, Sec. 2.1 and 2.2.3): always-failed samples across AT methods (Fig. 2), transfer
between them (Fig. 3), similar failure patterns (Fig. 8) and the hard-label toy case (Fig. 4)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ...core.stats import Z95, bootstrap_over_images, wilson_interval
from .core import (DOES_NOT_REPRODUCE, INCONCLUSIVE, REPRODUCES, ClaimCheck, Learned, accuracy_difference, bonferroni_z,
                   check_points, independent_difference_interval, interval_text, judge, model_learned)

Correctness = Mapping[str, Mapping[str, Sequence[bool]]]  # model -> "pgd_acc" / "aa_acc" -> per-image flags


def all_or_none_share(overlap: Mapping[str, Any], models: Iterable[Learned], *,
                      threshold: float = 0.8) -> ClaimCheck:
    """DUCAT, Fig. 2: "with a high probability (i.e., > 80%), [a test sample's] adversarial sample can either be
    uniformly defended by the four methods or escape from all of them".

    ``overlap``: :meth:`atkit.experiments.measures.CrossAttack.overlap_summary` (``n``, ``count_by_defeated``). Rule: the
    95 % Wilson interval of the share defended by all or by none: reproduces when it lies above ``threshold``
    (the paper's 0.8), not reproduced when below, inconclusive when it holds it.
    """
    threshold = check_points("all_or_none_threshold", threshold, 0.0, 1.0)
    claim = f"over {threshold:.0%} of samples are defended by all models or by none"
    rule = f"95 % Wilson interval of the all-or-none share: above {threshold:g} -> reproduces, below -> not reproduced"
    counts, n = list(overlap["count_by_defeated"]), int(overlap["n"])
    k = int(counts[0]) + int(counts[-1])
    low, high = wilson_interval(k, n)
    measured = (f"{k / n:.1%} [{low:.1%}, {high:.1%}] (all {int(counts[0]) / n:.1%}, none {int(counts[-1]) / n:.1%}; "
                f"n={n})")
    return judge(claim, "DUCAT, Fig. 2", rule, models, reproduces=low > threshold, contradicts=high < threshold,
                 measured=measured, numbers={"share": k / n, "ci95": [low, high], "n": n, "threshold": threshold})


def transfer_follows_surrogate_success(transfer: Iterable[Mapping[str, Any]],
                                       models: Iterable[Learned]) -> ClaimCheck:
    """DUCAT, Fig. 3: examples that fooled the surrogate are "highly likely to be uniformly beaten" on the other
    models; those that did not rarely fool them.

    ``transfer``: :meth:`atkit.experiments.measures.CrossAttack.transfer_table` rows (``surrogate``, ``target``,
    ``subset``, ``n``, ``fooled``). Per off-diagonal (surrogate, target) cell, the fooled rate of the success
    subset minus that of the failure subset (disjoint images: Newcombe's independent interval). Rule: reproduces
    when every cell's 95 % interval lies above 0 (intersection-union: no correction); not reproduced when some cell's
    interval (Bonferroni over the cells) lies below 0; inconclusive otherwise. Cells with an empty subset are
    left out.
    """
    claim = "examples that fooled the surrogate transfer, the others do not"
    rule = ("per off-diagonal (surrogate, target): 95 % interval of fooled % (success subset) - fooled % (failure "
            "subset); every one above 0 -> reproduces, some below 0 (Bonferroni) -> not reproduced")
    rows = {(r["surrogate"], r["target"], r["subset"]): r for r in transfer if r["surrogate"] != r["target"]}
    cells = sorted({(s, t) for s, t, _ in rows})
    usable = [(s, t) for s, t in cells if (s, t, "success") in rows and (s, t, "failure") in rows
              and int(rows[s, t, "success"]["n"]) > 0 and int(rows[s, t, "failure"]["n"]) > 0]
    models = list(models)
    if not usable:
        return judge(claim, "DUCAT, Fig. 3", rule, models, missing="no surrogate with both fooled and unfooled "
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
    return judge(claim, "DUCAT, Fig. 3", rule, models, measured=measured,
                 reproduces=all(d["ci"][0] > 0 for d in diffs),
                 contradicts=any(d["ci_bonferroni"][1] < 0 for d in diffs),
                 numbers={"mean_fooled_success": succ, "mean_fooled_failure": fail, "cells": diffs})


# ----------------------------------------------------------------------------------------------- DUCAT, Fig. 8
def _off_diagonal_confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """The ``C (C − 1)`` off-diagonal counts of the confusion matrix (rows: true class, columns: prediction)."""
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)[~np.eye(num_classes, dtype=bool)].astype(float)


def _correlation(u: np.ndarray, v: np.ndarray) -> float:
    """Pearson's r, NaN when either vector is constant."""
    if u.std() == 0 or v.std() == 0:
        return math.nan
    return float(np.corrcoef(u, v)[0, 1])


def confusion_correlations(labels: Sequence[int], predictions: Mapping[str, Sequence[int]], num_classes: int,
                           indices: Optional[np.ndarray] = None) -> dict[str, float]:
    """Pearson's r of the off-diagonal confusion counts for every pair of models (``"a / b"``), from per-image
    labels and predictions (on the images at ``indices``, repeats allowed; default all)."""
    y = np.asarray(labels, dtype=np.int64)
    idx = np.arange(len(y)) if indices is None else indices
    cells = {name: _off_diagonal_confusion(y[idx], np.asarray(p, dtype=np.int64)[idx], num_classes)
             for name, p in predictions.items()}
    names = list(cells)
    return {f"{a} / {b}": _correlation(cells[a], cells[b]) for i, a in enumerate(names) for b in names[i + 1:]}


FAILURE_PATTERNS_CLAIM = "AT models share failure patterns beyond a standard model's"
FAILURE_PATTERNS_RULE = ("95 % bootstrap interval (over images) of mean off-diagonal confusion correlation among AT "
                         "models minus mean correlation of AT models with a standard-trained model: above 0 -> "
                         "reproduces, below 0 -> not reproduced")


def similar_failure_patterns(labels: Sequence[int], predictions: Mapping[str, Sequence[int]],
                             baseline: Optional[Mapping[str, Sequence[int]]], num_classes: int,
                             models: Iterable[Learned], *, seed: int = 0, n_resamples: int = 2000) -> ClaimCheck:
    """DUCAT, Fig. 8: "under the PGD-10 adversary, similar failure patterns can be observed in the confusion
    matrixes" of the four AT models, the evidence that always-failed samples exist "no matter the specific choice
    of AT methods" (Sec. 2.1).

    Any two CIFAR-10 classifiers confuse cats with dogs, so a positive correlation alone says little. The
    baseline is a standard-trained model attacked alike (``baseline``: name -> its per-image predictions on its
    own PGD examples). ``predictions``: each AT model's per-image prediction on its own PGD example; ``labels``:
    the true classes. Statistic: the mean Pearson r of the off-diagonal confusion counts over the pairs of AT
    models, minus the mean r between each AT model and each baseline model. Interval: 95 % percentile bootstrap
    over images (:func:`atkit.core.stats.bootstrap_over_images`; the confusion matrices are recomputed from each
    resample, since the ``C (C − 1)`` cells share images and are not independent). Rule: reproduces when the
    interval lies above 0 (the AT models fail more alike than an AT model and a standard one), not reproduced when
    below, inconclusive otherwise.
    """
    claim, source, rule = FAILURE_PATTERNS_CLAIM, "DUCAT, Fig. 8", FAILURE_PATTERNS_RULE
    models = list(models)
    at, base = dict(predictions), dict(baseline or {})
    if len(at) < 2:
        return judge(claim, source, rule, models, missing="fewer than 2 AT models")
    if not base:
        return judge(claim, source, rule, models, missing="no baseline model (a standard-trained model attacked "
                                                          "alike)")
    y = np.asarray(labels, dtype=np.int64)
    everything = {**at, **{f"baseline:{k}": v for k, v in base.items()}}
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in everything.items()}
    if any(len(v) != len(y) for v in arrays.values()):
        raise ValueError(f"{len(y)} labels but predictions of lengths {sorted({len(v) for v in arrays.values()})}")
    at_pairs = [(a, b) for i, a in enumerate(at) for b in list(at)[i + 1:]]
    base_pairs = [(a, f"baseline:{b}") for a in at for b in base]

    def statistic(idx: np.ndarray) -> float:
        cells = {k: _off_diagonal_confusion(y[idx], p[idx], num_classes) for k, p in arrays.items()}
        inside = [_correlation(cells[a], cells[b]) for a, b in at_pairs]
        across = [_correlation(cells[a], cells[b]) for a, b in base_pairs]
        return float(np.mean(inside) - np.mean(across))

    cells = {k: _off_diagonal_confusion(y, p, num_classes) for k, p in arrays.items()}
    r_at = {f"{a} / {b}": _correlation(cells[a], cells[b]) for a, b in at_pairs}
    r_base = {f"{a} / {b.split(':', 1)[1]}": _correlation(cells[a], cells[b]) for a, b in base_pairs}
    numbers: dict[str, Any] = {"at_pairs": r_at, "baseline_pairs": r_base, "n": int(len(y)),
                               "n_cells": num_classes * (num_classes - 1)}
    if not all(m.learned for m in models):  # the guard's verdict; no bootstrap of noise
        return judge(claim, source, rule, models, numbers=numbers)
    if not all(math.isfinite(r) for r in [*r_at.values(), *r_base.values()]):
        return judge(claim, source, rule, models, numbers=numbers,
                     missing="a confusion matrix without off-diagonal spread (a correlation is undefined)")
    boot = bootstrap_over_images(statistic, len(y), n_resamples=n_resamples, seed=seed)
    low, high = boot["ci"]
    mean_at, mean_base = float(np.mean(list(r_at.values()))), float(np.mean(list(r_base.values())))
    numbers.update(mean_at=mean_at, mean_baseline=mean_base, difference=boot["estimate"], ci95=[low, high],
                   bootstrap=boot)
    measured = (f"mean off-diagonal confusion correlation among {len(at)} AT models {mean_at:.2f} vs with "
                f"{', '.join(base)} {mean_base:.2f}: difference {boot['estimate']:+.2f} [{low:+.2f}, {high:+.2f}] "
                f"({boot['method']}, {len(y)} images)")
    return judge(claim, source, rule, models, measured=measured, numbers=numbers, reproduces=low > 0,
                 contradicts=high < 0)


# ----------------------------------------------------------------------------------------------- DUCAT, Fig. 4
def collapse_threshold_ranges(gap_ci: Sequence[float], difference_ci: Optional[Sequence[float]] = None
                              ) -> list[dict[str, Any]]:
    """How the toy-case verdict depends on the collapse threshold ``t`` (points, in [0, 100]): with the hard gap's
    interval ``[gl, gh]`` and the gap difference's ``[dl, dh]``, reproduces for ``t < gl`` when ``dl > 0``, not
    reproduced for ``t > gh`` (and for every ``t`` when ``dh < 0``), inconclusive in between. Returns the segments
    ``{"verdict", "from", "to"}`` in order, adjacent equal verdicts merged."""
    gl, gh = (min(max(float(v), 0.0), 100.0) for v in gap_ci)
    if difference_ci is not None and difference_ci[1] < 0:
        return [{"verdict": DOES_NOT_REPRODUCE, "from": 0.0, "to": 100.0}]
    base_ok = difference_ci is None or difference_ci[0] > 0
    segments = [(REPRODUCES if base_ok else INCONCLUSIVE, 0.0, gl), (INCONCLUSIVE, gl, gh),
                (DOES_NOT_REPRODUCE, gh, 100.0)]
    out: list[dict[str, Any]] = []
    for word, lo, hi in segments:
        if hi <= lo:
            continue
        if out and out[-1]["verdict"] == word:
            out[-1]["to"] = hi
        else:
            out.append({"verdict": word, "from": lo, "to": hi})
    return out


def _ranges_text(ranges: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for r in ranges:
        if r["from"] == 0.0 and r["to"] == 100.0:
            parts.append(f"any threshold: {r['verdict']}")
        elif r["from"] == 0.0:
            parts.append(f"below {r['to']:.2f}: {r['verdict']}")
        elif r["to"] == 100.0:
            parts.append(f"above {r['from']:.2f}: {r['verdict']}")
        else:
            parts.append(f"{r['from']:.2f} to {r['to']:.2f}: {r['verdict']}")
    return "; ".join(parts)


def hard_labels_collapse_under_autoattack(toy: Iterable[Mapping[str, Any]], base_model: Optional[str], n: int,
                                          num_classes: int, *, protocol: str = "published", threshold: float = 10.0,
                                          hard_variant: str = "hard-label DUCAT",
                                          correct: Optional[Correctness] = None) -> ClaimCheck:
    """DUCAT, Fig. 4 (Sec. 2.2.3): the hard-label dummy-class model reaches "surprisingly high accuracy both on
    clean data and under PGD-10 adversary" but "immediately collapses once facing Auto-Attack".

    ``toy``: the toy-case rows (``model``, ``protocol``, ``variant``, ``clean_acc``, ``pgd_acc``, ``aa_acc``, percent
    on ``n`` images): the ``hard_variant`` row of ``protocol`` and the ``base_model`` row (None: no base compared).
    PGD-10 and AutoAttack are both taken under ``protocol`` (the same attack target: never one protocol's PGD-10
    against another's AutoAttack); ``correct`` (row ``model`` -> ``"pgd_acc"`` / ``"aa_acc"`` -> per-image flags)
    makes the intervals paired. ``threshold``: the points by which PGD-10 must exceed AutoAttack to call it a
    collapse (the paper gives no number; a stated effect size). Gap = PGD-10 − AutoAttack with its 95 % interval;
    the hard gap minus the base gap combines the two intervals (Zou & Donner's MOVER, the rule behind Newcombe's).
    Rule: reproduces when the hard gap's interval lies above ``threshold`` and the difference's above 0; not
    reproduced when the hard gap's lies below ``threshold`` or the difference's below 0; inconclusive otherwise.
    ``numbers["threshold_ranges"]`` records the verdict for every threshold (:func:`collapse_threshold_ranges`).
    """
    threshold = check_points("collapse_threshold", threshold)
    claim = f"hard labels: high PGD-10 accuracy that collapses under AutoAttack ({protocol} protocol)"
    rule = (f"95 % interval of PGD-10 - AutoAttack, both under the {protocol} protocol, of the hard-label model above "
            f"{threshold:g} points and of its gap minus the base model's above 0 -> reproduces; either below -> not "
            "reproduced")
    rows = [dict(r) for r in toy]
    hard = next((r for r in rows if r.get("variant") == hard_variant and r.get("protocol") == protocol), None)
    base = next((r for r in rows if base_model is not None and r.get("model") == base_model), None)
    flags = correct or {}
    models = [model_learned(float(r["clean_acc"]), num_classes, n=n, name=name, robust=float(r["pgd_acc"]),
                            robust_label="PGD-10")
              for r, name in ((hard, hard_variant), (base, base_model)) if r is not None]
    if hard is None:
        return judge(claim, "DUCAT, Fig. 4", rule, models, missing=f"no {hard_variant} row for the {protocol} protocol")

    def gap(row: Mapping[str, Any]) -> dict[str, Any]:
        return accuracy_difference(float(row["pgd_acc"]), float(row["aa_acc"]), n,
                                   correct_a=flags.get(row["model"], {}).get("pgd_acc"),
                                   correct_b=flags.get(row["model"], {}).get("aa_acc"))

    g_hard = gap(hard)
    lh, hh = g_hard["ci"]
    measured = (f"PGD-10 {float(hard['pgd_acc']):.1f}% vs AA {float(hard['aa_acc']):.1f}% ({protocol}): gap "
                f"{interval_text(g_hard)}")
    numbers: dict[str, Any] = {"protocol": protocol, "threshold": threshold, "hard_gap": g_hard}
    low = high = None
    if base is not None:
        g_base = gap(base)
        d = g_hard["difference"] - g_base["difference"]
        (lb, hb) = g_base["ci"]
        low = d - math.hypot(g_hard["difference"] - lh, hb - g_base["difference"])
        high = d + math.hypot(hh - g_hard["difference"], g_base["difference"] - lb)
        measured += f"; {base_model} gap {interval_text(g_base)}; difference {d:+.2f} [{low:+.2f}, {high:+.2f}]"
        numbers.update(base_gap=g_base, gap_difference={"difference": d, "ci": [low, high], "method": "MOVER"})
    ranges = collapse_threshold_ranges((lh, hh), None if low is None else (low, high))
    numbers["threshold_ranges"] = ranges
    measured += f"; verdict by collapse threshold: {_ranges_text(ranges)}"
    return judge(claim, "DUCAT, Fig. 4", rule, models, measured=measured, numbers=numbers,
                 reproduces=lh > threshold and (low is None or low > 0),
                 contradicts=hh < threshold or (high is not None and high < 0))


__all__ = ["FAILURE_PATTERNS_CLAIM", "FAILURE_PATTERNS_RULE", "all_or_none_share", "collapse_threshold_ranges", "confusion_correlations",
           "hard_labels_collapse_under_autoattack", "similar_failure_patterns", "transfer_follows_surrogate_success"]

"""Catastrophic overfitting (CO) of single-step adversarial training, flagged from the per-epoch evaluation
(docs/methods.md, fast adversarial training).

CO, as Wong, Rice & Kolter (ICLR 2020, arXiv:2001.03994) describe it for FGSM training and de Jorge et al. (NeurIPS
2022, arXiv:2202.01181) for single-step methods in general: within an epoch or two the model's accuracy under PGD
collapses (towards 0 %) while its accuracy under FGSM rises (Kim et al., AAAI 2021, arXiv:2010.01799, describe PGD
accuracy falling to 0 % and FGSM accuracy rising to 100 %) -- the model has learned to defeat the one-step attack it
trains on, not the threat model. For a method with :attr:`~atkit.methods.Method.single_step`, the trainer evaluates the
selection images under FGSM beside PGD every evaluation epoch and applies :func:`catastrophic_overfitting` to the
online model's accuracies. An epoch is flagged when

(a) PGD accuracy is more than :data:`PGD_DROP_POINTS` = 20 points below its best so far while FGSM accuracy is higher
    than at that best epoch -- 20 points is the drop of PGD accuracy between consecutive epochs at which Wong et al.'s
    released code stops training (``train_fgsm.py --early-stop``: ``robust_acc - prev_robust_acc < -0.2``); requiring
    FGSM to rise separates CO from a run that degrades under every attack (a diverging learning rate); or
(b) FGSM accuracy exceeds PGD accuracy by more than :data:`FGSM_GAP_POINTS` = 30 points -- a healthy adversarially
    trained CIFAR-10 model loses about 10 points from FGSM to PGD (Madry et al., ICLR 2018: 56.1 % FGSM vs 45.8 %
    PGD-20 white-box), while after CO the gap is most of the clean accuracy (PGD near 0 with FGSM high), so 30
    points is three times the healthy gap and far below the CO gap; it also catches CO that sets in before PGD
    accuracy ever rose (rule (a) needs a best epoch to fall from).

Both thresholds are much larger than the sampling noise of the selection images (a 95 % interval of about +-3 points
at n = 1000). The flag is a warning in the epoch's log line and in ``metrics.json`` (``warnings``); training goes on,
and model selection by PGD accuracy (``eval.select_by: pgd``) keeps the last checkpoint before the collapse as "best".
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

#: Rule (a): PGD accuracy this many points below its best so far, with FGSM accuracy up (Wong et al.'s early stop).
PGD_DROP_POINTS = 20.0
#: Rule (b): FGSM accuracy this many points above PGD accuracy (three times a healthy model's gap).
FGSM_GAP_POINTS = 30.0
#: The warning's kind in ``metrics.json``.
KIND = "catastrophic_overfitting"


def catastrophic_overfitting(pgd: Sequence[float], fgsm: Sequence[float], *, drop: float = PGD_DROP_POINTS,
                             gap: float = FGSM_GAP_POINTS) -> Optional[str]:
    """Whether the last of the per-epoch accuracies (percent, oldest first, one PGD and one FGSM value per evaluated
    epoch) shows CO (module docstring): the reason as one sentence, or None. NaN entries are skipped."""
    points = [(p, f) for p, f in zip(pgd, fgsm) if math.isfinite(p) and math.isfinite(f)]
    if not points or not (math.isfinite(pgd[-1]) and math.isfinite(fgsm[-1])):
        return None
    pgd_now, fgsm_now = points[-1]
    best = max(range(len(points)), key=lambda i: (points[i][0], -i))  # the first epoch of the highest PGD accuracy
    pgd_best, fgsm_at_best = points[best]
    if pgd_best - pgd_now > drop and fgsm_now > fgsm_at_best:
        return (f"PGD accuracy fell {pgd_best - pgd_now:.1f} points from its best ({pgd_best:.1f}% -> {pgd_now:.1f}%) "
                f"while FGSM accuracy rose ({fgsm_at_best:.1f}% -> {fgsm_now:.1f}%)")
    if fgsm_now - pgd_now > gap:
        return f"FGSM accuracy {fgsm_now:.1f}% exceeds PGD accuracy {pgd_now:.1f}% by {fgsm_now - pgd_now:.1f} points"
    return None


def flag_epoch(record: dict[str, Any], history: Sequence[Mapping[str, Any]], pgd_key: str,
               fgsm_key: str = "test_fgsm_acc") -> Optional[str]:
    """Apply :func:`catastrophic_overfitting` to the complete epochs of ``history`` and ``record`` (the epoch just
    evaluated); on CO, store the warning in ``record["warning"]`` and return it. Epochs without both accuracies
    (not evaluated this epoch) are skipped; a record without them is never flagged."""
    if pgd_key not in record or fgsm_key not in record:
        return None
    rows = [r for r in history if not r.get("partial") and pgd_key in r and fgsm_key in r] + [record]
    reason = catastrophic_overfitting([float(r[pgd_key]) for r in rows], [float(r[fgsm_key]) for r in rows])
    if reason is not None:
        record["warning"] = f"catastrophic overfitting suspected: {reason}"
    return reason


def run_warnings(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``warnings`` of ``metrics.json``: ``{"epoch", "kind", "message"}`` for every epoch record with one."""
    return [{"epoch": r.get("epoch"), "kind": KIND, "message": r["warning"]} for r in history if r.get("warning")]


__all__ = ["FGSM_GAP_POINTS", "KIND", "PGD_DROP_POINTS", "catastrophic_overfitting", "flag_epoch", "run_warnings"]

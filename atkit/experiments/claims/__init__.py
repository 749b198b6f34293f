"""Verdicts on the papers' claims, each stated at the scale it was judged at, given only on models that learned.

Each motivation notebook ends with checks of the paper's statements on the run it just made ("failure MSE <
success MSE after PGD-AT", "a moderate boundary budget helps clean accuracy", ...), and the results pages judge
published table cells. One function per paper claim, one module per paper:

* :mod:`.rpat`: :func:`perception_mse_claim` (RPAT, Fig. 2; all images, or among clean-correct images only) and
  :func:`rpat_table1_direction` (which cells of RPAT, Table 1 claim a direction);
* :mod:`.raat`: :func:`boundary_budget_hardly_moves_robustness`, :func:`moderate_boundary_budget_helps_clean`,
  :func:`nonboundary_needs_full_budget` (RAAT, Fig. 2) and :func:`appropriate_eta_helps_both` (RAAT, Fig. 5b:
  better in both clean and robust accuracy);
* :mod:`.ducat`: :func:`all_or_none_share`, :func:`transfer_follows_surrogate_success`,
  :func:`similar_failure_patterns` (against a standard-trained model's confusions, bootstrap over images) and
  :func:`hard_labels_collapse_under_autoattack` (PGD-10 and AutoAttack under the same protocol, with the verdict
  for every collapse threshold) (DUCAT, Fig. 2, 3, 8 and 4);
* :mod:`.core`: the learned-model guard, the verdict words, :func:`published_difference_verdict` (a directional
  verdict only where the paper claims a direction, else whether the published size lies inside the interval) and
  :func:`two_networks_verdict` (one run per arm: "differs" / "no difference detected").

Each returns a :class:`ClaimCheck`: the verdict (``"reproduces at this scale (clean x %, robust y %)"``, ``"not
reproduced at this scale (...)"``, ``"inconclusive within noise at this scale (...)"`` or ``"not judged: ..."``),
``agrees`` (True / False / None), the numbers compared, the rule and the accuracies it was judged at.

**The noise rule.** Every comparison is a 95 % interval, never a bare difference: an accuracy difference
between two models on the same ``n`` test images is Newcombe's paired interval (1998, method 10) when the
per-image correctness is given, else Newcombe's interval for independent proportions (1998, method 10 of the
companion paper; wider, hence conservative for paired data); a statistic of many cells that share images is
bootstrapped over images. A claim that *some* of ``k`` comparisons shows an effect (the best budget, any η, any
reversed pair) uses Bonferroni's ``z = Φ⁻¹(1 − 0.025 / k)``; a claim that *every* comparison does
(intersection-union) needs none. A fixed number enters only as a stated effect size of the paper's words:
``robust_tolerance`` (points within which robust accuracies count as "the same",
:func:`boundary_budget_hardly_moves_robustness`), the 80 % of DUCAT, Fig. 2, and DUCAT's "collapse" margin.
"""
from .core import AT_THIS_SCALE, CHANCE_FACTOR, CHANCE_MARGIN, CONSISTENT_WITH_SIZE, DOES_NOT_REPRODUCE, INCONCLUSIVE, NOT_JUDGED, NOT_LEARNED, PER_IMAGE_MISSING, REPRODUCES, SIGN_OPEN_SIZE_EXCLUDED, SIZE_EXCLUDED, ClaimCheck, Learned, accuracy_difference, at_scale, bonferroni_z, independent_difference_interval, interval_verdict, judge_check, judged_at, learning_minimum, model_learned, per_image_data_missing, published_difference_verdict, verdict
from ...core.stats import DIFFERS, NO_DIFFERENCE, two_networks_verdict
from .ducat import (FAILURE_PATTERNS_CLAIM, FAILURE_PATTERNS_RULE, all_or_none_share, collapse_threshold_ranges, confusion_correlations,
                    hard_labels_collapse_under_autoattack, similar_failure_patterns, transfer_follows_surrogate_success)
from .raat import (BOUNDARY_SOURCE, ETA_SOURCE, appropriate_eta_helps_both, boundary_budget_hardly_moves_robustness,
                   budget_axis, moderate_boundary_budget_helps_clean, nonboundary_needs_full_budget)
from .rpat import (PERCEPTION_MSE_PAPER, PERCEPTION_MSE_SOURCE, RPAT_COMPARED_METRICS, perception_mse_claim,
                   rpat_table1_direction)

__all__ = ["AT_THIS_SCALE", "BOUNDARY_SOURCE", "CHANCE_FACTOR", "CHANCE_MARGIN", "CONSISTENT_WITH_SIZE", "ClaimCheck",
           "DIFFERS", "DOES_NOT_REPRODUCE", "ETA_SOURCE", "FAILURE_PATTERNS_CLAIM", "FAILURE_PATTERNS_RULE", "INCONCLUSIVE", "Learned", "NOT_JUDGED", "NOT_LEARNED",
           "NO_DIFFERENCE", "PERCEPTION_MSE_PAPER", "PERCEPTION_MSE_SOURCE", "PER_IMAGE_MISSING", "REPRODUCES",
           "RPAT_COMPARED_METRICS", "SIGN_OPEN_SIZE_EXCLUDED", "SIZE_EXCLUDED", "accuracy_difference",
           "all_or_none_share", "appropriate_eta_helps_both", "at_scale", "bonferroni_z",
           "boundary_budget_hardly_moves_robustness", "budget_axis", "collapse_threshold_ranges",
           "confusion_correlations", "hard_labels_collapse_under_autoattack", "independent_difference_interval",
           "interval_verdict", "judge_check", "judged_at", "learning_minimum", "model_learned",
           "moderate_boundary_budget_helps_clean", "nonboundary_needs_full_budget", "per_image_data_missing",
           "perception_mse_claim", "published_difference_verdict", "rpat_table1_direction",
           "similar_failure_patterns", "transfer_follows_surrogate_success", "two_networks_verdict", "verdict"]

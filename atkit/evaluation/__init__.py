"""Evaluation: how robust a model is, measured one way (the one door is :func:`evaluate`).

Owns the evaluation attacks (one registered file each in :mod:`atkit.evaluation.attacks`, the registry and the
name grammar in :mod:`.attack`), what they attack and how success is decided (:mod:`.target`: always the
prediction that is scored), the one attack loop (:mod:`.runner`), the official AutoAttack driver
(:mod:`.autoattack`), the result and its JSON (:mod:`.result`), the DUCAT protocols' worst case, the
gradient-masking sanity checks (:mod:`.sanity`), paired comparisons of evaluations on the same images
(:mod:`.compare`) and RobustBench model cards (:mod:`.card`). May import the attack algorithms
(:mod:`atkit.attacks`), the models and core; training, experiments and the workbench import it, never the other
way round.

    from atkit.evaluation import evaluate
    result = evaluate(model, x, y, attacks=["clean", "pgd20", "aa"])      # x in [0, 1], y labels
    result.accuracy, result.robust_accuracy, result.to_dict()              # per-image flags, 95 % intervals
"""
from .attack import (EVAL_ATTACKS, EvalAttack, NoParams, WholeSetRun, accepted_spellings, attack_order,
                     default_spellings, display_name, is_attack_name,
                     is_margin_attack, parse_attack, parse_attacks, register_eval_attack, robust_attacks,
                     split_attack_list, strongest, trade_off_scores, worst_case_name)
from . import attacks as _attacks  # noqa: F401  (registers every evaluation attack)
from .door import evaluate
from .result import EVAL_FORMAT, PROTOCOL_LABELS, WORST_CASE, EvalResult, results_table, worst_case_over_protocols
from .sanity import checks_summary, run_sanity_checks
from .setup import EVAL_PRECISIONS, EvalSetup
from ..models.dummy import PROTOCOLS

__all__ = ["EVAL_ATTACKS", "EVAL_FORMAT", "EVAL_PRECISIONS", "EvalAttack", "EvalResult", "EvalSetup", "NoParams",
           "PROTOCOLS", "PROTOCOL_LABELS", "WORST_CASE", "WholeSetRun", "accepted_spellings", "attack_order",
           "checks_summary", "default_spellings",
           "display_name", "evaluate", "is_attack_name", "is_margin_attack", "parse_attack", "parse_attacks", "register_eval_attack",
           "results_table", "robust_attacks", "run_sanity_checks", "split_attack_list", "strongest", "trade_off_scores",
           "worst_case_name", "worst_case_over_protocols"]

from .._moved import gone_names  # noqa: E402

__getattr__ = gone_names(__name__)

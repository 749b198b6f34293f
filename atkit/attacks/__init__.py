"""Attacks: PGD (L-inf/L2, several objectives, targeted), FGSM, random noise, and official AutoAttack."""
from .fgsm import fgsm
from .losses import ATTACK_OBJECTIVES, cw_objective, ce_objective, dlr_objective, kl_objective, squared_error_objective
from .mode import BN_MODES, attack_mode, eval_logits, frozen_eval
from .pgd import NORMS, check_budget, pgd, project, random_start_delta
from .random_noise import random_noise

__all__ = [
    "ATTACK_OBJECTIVES", "BN_MODES", "NORMS", "attack_mode", "ce_objective", "check_budget", "cw_objective",
    "dlr_objective", "eval_logits", "fgsm", "frozen_eval", "kl_objective", "pgd", "project", "random_noise",
    "random_start_delta", "squared_error_objective",
]
from .autoattack import AA_ATTACKS, AutoAttackResult, run_autoattack  # noqa: E402

__all__ += ["AA_ATTACKS", "AutoAttackResult", "run_autoattack"]
from .threat import THREAT_DEFAULTS, ThreatModel, resolve_threat  # noqa: E402
from .eval_attacks import EVAL_ATTACKS, EvalAttack, parse_eval_attack  # noqa: E402

__all__ += ["EVAL_ATTACKS", "EvalAttack", "THREAT_DEFAULTS", "ThreatModel", "parse_eval_attack", "resolve_threat"]

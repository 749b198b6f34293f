"""Attack algorithms: PGD (L-inf/L2, several objectives, targeted), FGSM and random noise, and the threat model.

Owns the building blocks that training methods and evaluation attacks both use; the evaluation attacks themselves
(registered by name, official AutoAttack included) live in :mod:`atkit.evaluation`. May import core only.
"""
from .._moved import gone_names
from .fgsm import fgsm
from .losses import ATTACK_OBJECTIVES, cw_objective, ce_objective, dlr_objective, kl_objective, squared_error_objective
from .mode import BN_MODES, attack_mode, eval_logits, frozen_eval
from .pgd import NORMS, check_budget, pgd, project, random_start_delta
from .random_noise import random_noise
from .threat import THREAT_DEFAULTS, ThreatModel, resolve_threat

__all__ = [
    "ATTACK_OBJECTIVES", "BN_MODES", "NORMS", "THREAT_DEFAULTS", "ThreatModel", "attack_mode", "ce_objective",
    "check_budget", "cw_objective", "dlr_objective", "eval_logits", "fgsm", "frozen_eval", "kl_objective", "pgd",
    "project", "random_noise", "random_start_delta", "resolve_threat", "squared_error_objective",
]
__getattr__ = gone_names(__name__)

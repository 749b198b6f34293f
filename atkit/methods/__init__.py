"""AT methods, one file each, registered by name (``get_method("trades", lam=6)``)."""
from .base import (LossOutput, Method, Params, StepContext, Term, ThreatModel, build_params, clean_logits_for_metrics,
                   defines_regularizer, weighted_sum)
from .registry import (ADDONS, COMPOSERS, METHODS, Addon, bases_of, composite_names, describe_methods, get_method,
                       method_names, register, register_addon)

# Importing the modules registers the methods.
from . import standard, random_noise_training, pgd_at, trades, mart, consistency_at, fait, mer, score, rpat, rebat, ducat, raat, boundary_budget, awp  # noqa: E402,F401
from . import fgsm_rs, n_fgsm  # noqa: E402,F401

__all__ = [
    "ADDONS", "Addon", "COMPOSERS", "METHODS", "LossOutput", "Method", "Params", "StepContext", "Term", "ThreatModel",
    "bases_of", "build_params", "clean_logits_for_metrics", "composite_names", "defines_regularizer",
    "describe_methods", "get_method", "method_names", "register", "register_addon", "weighted_sum",
]

"""AT methods, one file each, registered by name (``get_method("trades", lam=6)``)."""
from .base import LossOutput, Method, Params, StepContext, ThreatModel, build_params, clean_logits_for_metrics
from .registry import COMPOSERS, METHODS, describe_methods, get_method, method_names, register

# Importing the modules registers the methods.
from . import standard, random_noise_training, pgd_at, trades, mart, consistency_at, fait, mer, score, rpat, rebat, ducat, raat, boundary_budget  # noqa: E402,F401

__all__ = [
    "COMPOSERS", "METHODS", "LossOutput", "Method", "Params", "StepContext", "ThreatModel", "build_params",
    "clean_logits_for_metrics", "describe_methods", "get_method", "method_names", "register",
]

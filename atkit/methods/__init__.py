"""Methods: the adversarial-training losses, one file each, registered by name (``get_method("trades", lam=6)``).

Owns each method's loss with its ``Params`` (whose metadata drives validation, listings and widgets), the add-ons
that compose with a base (``trades+rpat``, ``pgd_at+awp``), and the registry-wide contract every method passes. May
import the attack algorithms, the models and core; the trainer (:mod:`atkit.training`) calls them.
"""
import importlib
import pkgutil

from .base import LossOutput, Method, Params, StepContext, Term, build_params, clean_logits_for_metrics, defines_regularizer, weighted_sum
from ..attacks import ThreatModel
from .registry import (ADDONS, COMPOSERS, METHODS, Addon, bases_of, composite_names, describe_methods, get_method,
                       method_names, register, register_addon)

#: The modules of this folder that hold no method (the others are imported below, which registers them: a new method
#: is one new file).
INFRASTRUCTURE = ("base", "registry", "divergences")

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "ADDONS", "Addon", "COMPOSERS", "METHODS", "LossOutput", "Method", "Params", "StepContext", "Term", "ThreatModel",
    "bases_of", "build_params", "clean_logits_for_metrics", "composite_names", "defines_regularizer",
    "describe_methods", "get_method", "method_names", "register", "register_addon", "weighted_sum",
]

"""Where the public imports of earlier atkit versions went: they keep working, or fail with the new name.

:data:`MOVED_MODULES` maps an old module path to the module that now holds its public names: importing the old
path gives that module (``from atkit.evaluate import evaluate`` keeps working). :data:`GONE_MODULES` maps an old
path to what replaces it: importing it raises one ``ImportError`` naming the replacement. :data:`GONE_NAMES` does
the same for single names: each package's ``__getattr__`` (:func:`gone_names`) raises an ``ImportError`` naming
the replacement, so ``from atkit.evaluate import evaluate_dummy_protocols`` says what to write instead.
:func:`install` (called by ``atkit/__init__.py``) puts the module finder in place.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Any, Callable, Optional

#: old module -> the module that holds its public names now (the old import path keeps working).
MOVED_MODULES: dict[str, str] = {
    "atkit.evaluate": "atkit.evaluation",
    "atkit.sanity": "atkit.evaluation.sanity",
    "atkit.attacks.autoattack": "atkit.evaluation.autoattack",
    "atkit.analysis": "atkit.experiments.measures",
    "atkit.claims": "atkit.experiments.claims",
}

#: old module -> what replaces it (importing the old path raises ImportError saying so).
GONE_MODULES: dict[str, str] = {
    "atkit.attacks.eval_runner": "every attack runs through atkit.evaluation.evaluate(model, x, y, attacks=[...]) "
                                 "(its loop is atkit.evaluation.runner.run_attacks)",
    "atkit.attacks.eval_attacks": "evaluation attacks are registered classes: from atkit.evaluation import "
                                  "EVAL_ATTACKS, parse_attack, robust_attacks, strongest, trade_off_scores",
}

#: (module that holds the name now, old name) -> what to write instead.
GONE_NAMES: dict[tuple[str, str], str] = {
    ("atkit.evaluation", "evaluate_dummy_protocols"):
        "evaluate(model, x, y) evaluates a dummy-class model under every DUCAT protocol; result.protocols holds "
        "each protocol's result and the result itself is their per-image worst case",
    ("atkit.evaluation", "dummy_protocols_record"): "EvalResult.to_dict() (a dummy-class result carries its protocols)",
    ("atkit.evaluation", "parse_eval_attack"): "from atkit.evaluation import parse_attack",
    ("atkit.evaluation", "ATTACK_NAMES"): "from atkit.evaluation import accepted_spellings",
    ("atkit.evaluation", "CW_DEFAULT_STEPS"): "the default of the cw attack's Params: EVAL_ATTACKS['cw'].Params",
    ("atkit.evaluation.autoattack", "AA_PRESETS"):
        "each AutoAttack run is a registered evaluation attack (aa, apgd, apgd_dlr, square) with its own settings",
    ("atkit.attacks", "run_autoattack"): "from atkit.evaluation.autoattack import run_autoattack",
    ("atkit.attacks", "AutoAttackResult"): "from atkit.evaluation.autoattack import AutoAttackResult",
    ("atkit.attacks", "AA_ATTACKS"): "from atkit.evaluation.autoattack import AA_ATTACKS",
    ("atkit.attacks", "EVAL_ATTACKS"): "from atkit.evaluation import EVAL_ATTACKS",
    ("atkit.attacks", "EvalAttack"): "from atkit.evaluation import EvalAttack",
    ("atkit.attacks", "parse_eval_attack"): "from atkit.evaluation import parse_attack",
    ("atkit.evaluation.sanity", "strongest_attack"): "from atkit.evaluation import strongest (margin_only=True)",
}


def gone_names(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that raises ImportError naming the replacement of a name in :data:`GONE_NAMES`."""

    def __getattr__(name: str) -> Any:
        replacement = GONE_NAMES.get((module, name))
        if replacement is not None:
            raise ImportError(f"{module}.{name} is gone from atkit: {replacement}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(self.target)

    def exec_module(self, module: Any) -> None:  # the target module is already executed
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname in GONE_MODULES:
            raise ImportError(f"{fullname} is gone from atkit: {GONE_MODULES[fullname]}", name=fullname)
        target = _moved_target(fullname)
        if target is not None:
            return importlib.util.spec_from_loader(fullname, _Alias(target))
        return None


def _moved_target(fullname: str) -> Optional[str]:
    """The module an old path now names: the path itself in :data:`MOVED_MODULES`, or a submodule of a moved
    package (``atkit.claims.core`` -> ``atkit.experiments.claims.core``), so no module is ever loaded twice."""
    if fullname in MOVED_MODULES:
        return MOVED_MODULES[fullname]
    for old, new in MOVED_MODULES.items():
        if fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


def install() -> None:
    """Put the finder of moved and gone modules first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


__all__ = ["GONE_MODULES", "GONE_NAMES", "MOVED_MODULES", "gone_names", "install"]

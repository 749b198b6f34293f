"""Where the public imports of earlier atkit versions went: they keep working, or fail with the new name.

:data:`MOVED_MODULES` maps an old module path to the module that now holds its public names: importing the old
path gives a :class:`MovedModule` that reads and writes that module (``from atkit.evaluate import evaluate`` keeps
working; so does ``from atkit.train import load_model``, with a warning, for a name that moved on to another module,
:data:`MOVED_NAMES`). :data:`GONE_MODULES` maps an old
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
import types
import warnings
from typing import Any, Callable, Optional

#: old module -> the module that holds its public names now (the old import path keeps working).
MOVED_MODULES: dict[str, str] = {
    "atkit.evaluate": "atkit.evaluation",
    "atkit.sanity": "atkit.evaluation.sanity",
    "atkit.attacks.autoattack": "atkit.evaluation.autoattack",
    "atkit.analysis": "atkit.experiments.measures",
    "atkit.claims": "atkit.experiments.claims",
    # The flat ring of modules grouped into wings (core, training, evaluation, experiments, workbench).
    "atkit.utils": "atkit.core.utils",
    "atkit.paths": "atkit.core.paths",
    "atkit.params": "atkit.core.params",
    "atkit.registry": "atkit.core.registry",
    "atkit.stats": "atkit.core.stats",
    "atkit.progress": "atkit.core.progress",
    "atkit.provenance": "atkit.core.provenance",
    "atkit.fast": "atkit.core.fast",
    "atkit.figures": "atkit.core.figures",
    "atkit.checkpoint_sniff": "atkit.core.checkpoint_sniff",
    "atkit.processes": "atkit.core.processes",
    "atkit.schedules": "atkit.core.schedules",
    "atkit.config": "atkit.training.config",
    "atkit.train": "atkit.training.trainer",
    "atkit.checkpoints": "atkit.training.checkpoints",
    "atkit.report": "atkit.training.report",
    "atkit.distributed": "atkit.training.distributed",
    "atkit.accumulate": "atkit.training.accumulate",
    "atkit.augment": "atkit.training.augment",
    "atkit.catastrophic_overfitting": "atkit.training.catastrophic_overfitting",
    "atkit.tensorboard_log": "atkit.training.tensorboard_log",
    "atkit.runs": "atkit.training.runs",
    "atkit.compare": "atkit.evaluation.compare",
    "atkit.card": "atkit.evaluation.card",
    "atkit.reference": "atkit.experiments.reference",
    "atkit.notebooks": "atkit.workbench.notebooks",
    "atkit.sweep": "atkit.workbench.sweep",
    "atkit.sweep_jobs": "atkit.workbench.sweep_jobs",
    "atkit.sweep_submitit": "atkit.workbench.sweep_submitit",
    "atkit.ablation": "atkit.workbench.ablation",
    "atkit.widgets": "atkit.workbench.widgets",
    "atkit.results": "atkit.workbench.results",
    "atkit.plots": "atkit.workbench.plots",
    "atkit.run_files": "atkit.workbench.run_files",
    "atkit.output_files": "atkit.workbench.output_files",
    "atkit.cli": "atkit.workbench.cli",
}

#: old module -> {name that lived there: the module that holds it now}. Reached through the old module, such a name
#: keeps working with a DeprecationWarning that names the new import.
MOVED_NAMES: dict[str, dict[str, str]] = {
    "atkit.train": {
        "LossOutput": "atkit.methods",
        "Method": "atkit.methods",
        "check_checkpoint_compatible": "atkit.training.checkpoints",
        "hard_labels": "atkit.training.augment",
        "load_dataset": "atkit.data",
        "load_model": "atkit.training.checkpoints",
        "predict_labels": "atkit.models",
        "resolve_checkpoint": "atkit.training.checkpoints",
        "resolve_output_path": "atkit.core.paths",
        "rng_state": "atkit.training.checkpoints",
        "same_weights": "atkit.training.report",
        "set_rng_state": "atkit.training.checkpoints",
        "split_validation": "atkit.data",
        "test_images_record": "atkit.data",
        "to_float_images": "atkit.data",
    },
    "atkit.checkpoints": {
        "MAX_EXPANSION": "atkit.core.checkpoint_files",
        "MIN_DECLARED_LIMIT": "atkit.core.checkpoint_files",
        "SAFE_GLOBALS": "atkit.core.checkpoint_files",
        "WRAPPER_KEYS": "atkit.core.checkpoint_files",
        "WRAPPER_PREFIXES": "atkit.core.checkpoint_files",
        "alternatives_hint": "atkit.core.checkpoint_files",
        "check_checkpoint_file": "atkit.core.checkpoint_sniff",
        "check_declared_sizes": "atkit.core.checkpoint_files",
        "checkpoint_record": "atkit.core.provenance",
        "file_sha256": "atkit.core.utils",
        "load_checkpoint_with_record": "atkit.core.checkpoint_files",
    },
    "atkit.runs": {
        "train": "atkit.training.trainer",
    },
    "atkit.sweep_submitit": {
        "CancelReport": "atkit.workbench.sweep_jobs",
        "INSTALL_MESSAGE": "atkit.workbench.sweep_jobs",
        "SUBMITIT_DIR": "atkit.workbench.sweep_jobs",
        "cancel_sweep": "atkit.workbench.sweep_jobs",
        "format_status": "atkit.workbench.sweep_jobs",
        "sweep_status": "atkit.workbench.sweep_jobs",
    },
    "atkit.results": {
        "RunConfig": "atkit.training.config",
        "TRAINING_OPTION_DEFAULTS": "atkit.training.augment",
        "ThreatModel": "atkit.attacks",
        "ablation_figure": "atkit.workbench.plots",
        "data_size_label": "atkit.workbench.run_labels",
        "learning_curves_figure": "atkit.workbench.plots",
        "open_run": "atkit.training.runs",
        "run_config_from": "atkit.training.runs",
        "tradeoff_figure": "atkit.workbench.plots",
        "training_label": "atkit.training.augment",
        "varied_params": "atkit.workbench.run_labels",
        "write_table": "atkit.core.utils",
    },
    "atkit.plots": {
        "atomic_write_bytes": "atkit.core.utils",
        "figure_png_bytes": "atkit.core.figures",
        "save_figure": "atkit.core.figures",
        "show_figure": "atkit.core.figures",
    },
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
    # Checkpoints take the run's explicit state (atkit.training.state.RunState), not the trainer.
    **{(old, "trainer_state"): "atkit.training.checkpoints.checkpoint_payload(trainer.state)"
       for old in ("atkit.train", "atkit.checkpoints")},
    **{(old, "save_trainer_checkpoint"): "atkit.training.checkpoints.save_checkpoint(trainer.state, trainer.dist, best)"
       for old in ("atkit.train", "atkit.checkpoints")},
    **{(old, "restore_trainer_state"):
       "atkit.training.checkpoints.restore_checkpoint(trainer.state, path, trainer.dist)"
       for old in ("atkit.train", "atkit.checkpoints")},
    ("atkit.results", "figure_png"): "from atkit.core.figures import figure_png_bytes",
    ("atkit.results", "save_png"): "from atkit.core.figures import save_figure",
    ("atkit.results", "has_final_eval"): "from atkit.training.report import has_final_evaluation",
}


def gone_names(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that raises ImportError naming the replacement of a name in :data:`GONE_NAMES`."""

    def __getattr__(name: str) -> Any:
        replacement = GONE_NAMES.get((module, name))
        if replacement is not None:
            raise ImportError(f"{module}.{name} is gone from atkit: {replacement}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


class MovedModule(types.ModuleType):
    """An old module path: its names are those of the module that replaced it (read and written there, so a
    monkeypatch through the old path patches the real module), plus the names that moved elsewhere
    (:data:`MOVED_NAMES`, with a DeprecationWarning naming the new import) and the gone ones (:data:`GONE_NAMES`,
    an ImportError naming the replacement)."""

    def __init__(self, name: str, target: types.ModuleType) -> None:
        super().__init__(name, target.__doc__)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_target")
        try:
            return getattr(target, name)  # a gone name of the target raises its own ImportError here
        except AttributeError:
            pass
        old = object.__getattribute__(self, "__name__")
        home = MOVED_NAMES.get(old, {}).get(name)
        if home is not None:
            warnings.warn(f"{old}.{name} moved: from {home} import {name}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(home), name)
        replacement = GONE_NAMES.get((old, name))
        if replacement is not None:
            raise ImportError(f"{old}.{name} is gone from atkit: {replacement}")
        raise AttributeError(f"module {old!r} (now {target.__name__!r}) has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("__") and name.endswith("__"):  # the import system's own attributes of this path
            object.__setattr__(self, name, value)
        else:
            setattr(object.__getattribute__(self, "_target"), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(object.__getattribute__(self, "_target"), name)

    @property  # type: ignore[override]
    def __dict__(self) -> dict[str, Any]:  # what vars() and monkeypatch's undo read: the real module's names
        return object.__getattribute__(self, "_target").__dict__

    def __dir__(self) -> list[str]:
        old = object.__getattribute__(self, "__name__")
        return sorted(set(dir(object.__getattribute__(self, "_target"))) | set(MOVED_NAMES.get(old, {})))


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return MovedModule(spec.name, importlib.import_module(self.target))

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


__all__ = ["GONE_MODULES", "GONE_NAMES", "MOVED_MODULES", "MOVED_NAMES", "MovedModule", "gone_names", "install"]

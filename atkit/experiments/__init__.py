"""Experiments: the motivation experiments of the four papers, one registered file each.

Owns each experiment's parameters, plan (which models to train or reuse), measurement, claims and figures
(:mod:`.base` says what a file holds), the runtime that runs them and writes their files (:mod:`.runtime`), the
measurements they share (:mod:`.measures`), the claim rules with their noise (:mod:`.claims`), their figures
(:mod:`.figures`) and the papers' published numbers (:mod:`.reference`, with its data in ``reference_data/``).
May import training, evaluation, methods, attacks, data, models and core; the workbench (notebooks, sweeps,
tables) imports it, never the other way round.

Every module of this folder other than the infrastructure below is imported here, so a new experiment is one
new file (plus its notebook, parameter sets and test): ``run_experiment("name", ...)``, the registry-wide
contract test and ``python -m atkit experiments`` find it.
"""
import importlib
import pkgutil

from .base import EXPERIMENTS, Experiment, TrainingParams, register_experiment
from .base import Context
from .notebook import experiment_notebook, write_experiment_notebook
from .runtime import ExperimentResult, judge_folder, notebook_params, run_experiment

#: The modules of this folder that are not experiments.
INFRASTRUCTURE = ("base", "runtime", "measures", "figures", "claims", "reference", "notebook")

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["EXPERIMENTS", "Context", "Experiment", "ExperimentResult", "TrainingParams", "experiment_notebook", "judge_folder",
           "notebook_params", "register_experiment", "run_experiment", "write_experiment_notebook"]

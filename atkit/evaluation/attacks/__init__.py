"""The registered evaluation attacks, one file each (:mod:`atkit.evaluation.attack` says what a file holds).

Every module in this folder is imported here, so a new attack is one new file: nothing else to edit.
"""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

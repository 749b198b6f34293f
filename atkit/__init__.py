"""atkit: a research workbook for adversarial training.

Modules: :mod:`atkit.data` (datasets and on-device loaders), :mod:`atkit.models`, :mod:`atkit.attacks` (attack
algorithms), :mod:`atkit.methods` (AT losses, registered by name), :mod:`atkit.train` (trainer and run
directories), :mod:`atkit.evaluation` (the one evaluation door, :func:`atkit.evaluation.evaluate`),
:mod:`atkit.analysis` and :mod:`atkit.plots`. Imports of earlier versions keep working or name their
replacement (:mod:`atkit._moved`).
"""
__version__ = "0.1.0"

from . import _moved  # noqa: E402

_moved.install()

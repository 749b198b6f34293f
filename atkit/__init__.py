"""atkit: a research workbook for adversarial training.

Modules: :mod:`atkit.data` (datasets and on-device loaders), :mod:`atkit.models`, :mod:`atkit.attacks`,
:mod:`atkit.methods` (AT losses, registered by name), :mod:`atkit.train` (trainer and run directories),
:mod:`atkit.evaluate` (one evaluation entry point), :mod:`atkit.analysis` and :mod:`atkit.plots`.
"""
__version__ = "0.1.0"

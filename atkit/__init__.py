"""atkit: a research workbook for adversarial training.

The package is a few wings, each a folder that says in its docstring what it owns and what it may import; the
import arrows run one way, down this list:

* :mod:`atkit.workbench`: the ``atkit`` command, notebooks, sweeps, ablations, results tables and figures;
* :mod:`atkit.experiments`: the papers' motivation experiments (one registered file each), their claims and the
  published numbers;
* :mod:`atkit.training`: the trainer, run folders, checkpoints, the final report;
* :mod:`atkit.evaluation`: the one evaluation door (:func:`atkit.evaluation.evaluate`) and its attacks;
* :mod:`atkit.methods`: the AT losses, registered by name; :mod:`atkit.attacks`: attack algorithms;
* :mod:`atkit.models` and :mod:`atkit.data`: the model zoo and the datasets;
* :mod:`atkit.core`: shared pieces (errors, files, paths, statistics, progress, provenance, precision).

Imports of earlier versions keep working or name their replacement (:mod:`atkit._moved`).
"""
__version__ = "0.1.0"

from . import _moved  # noqa: E402

_moved.install()

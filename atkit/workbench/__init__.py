"""Workbench: what a researcher drives — the command line, notebooks, sweeps, ablations, tables and figures.

Owns the ``atkit`` command (:mod:`.cli`) and where its outputs go (:mod:`.output_files`), the notebooks and their
papermill runs (:mod:`.notebooks`), sweeps over a grid, local or on SLURM (:mod:`.sweep`, :mod:`.sweep_jobs`,
:mod:`.sweep_submitit`), the ablation engine and its ipywidgets UI (:mod:`.ablation`, :mod:`.widgets`), and the
results tables and figures over many runs (:mod:`.run_files`, :mod:`.run_labels`, :mod:`.results`, :mod:`.plots`).
The top floor: may import every other wing; nothing imports it. Nothing is imported here, so the command line
does not load ipywidgets and a notebook does not load the sweep machinery.
"""

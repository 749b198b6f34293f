"""The project's notebooks: lookup by name, their declared parameters, and one papermill execution.

Both ``atkit notebook`` (:mod:`atkit.workbench.cli`) and the sweeps (:mod:`atkit.workbench.sweep`, :mod:`atkit.workbench.sweep_submitit`)
go through here, so a notebook name, a parameter check and a kernel mean the same thing everywhere:

* :func:`resolve_notebook`: ``"ablation"`` -> ``notebooks/ablation.ipynb`` (or a path to any notebook);
* :func:`declared_parameters`: the names in a notebook's ``parameters`` cell (papermill's reading of it);
* :func:`check_parameter_names`: refuse, before anything runs, a parameter the notebook does not declare;
* :func:`parameter_file_kind`: what a YAML file of ``parameters/`` is (a run configuration for ``atkit train``, a
  notebook's parameters, a sweep grid), read from its keys, so that a file given to the wrong command is refused
  with the command that takes it (:func:`refuse_other_kind`);
* :func:`run_notebook`: execute one notebook in this process with papermill;
  :func:`papermill_command`: the same execution as a ``python -m papermill`` command line (a sweep point
  runs in its own process, so that an interrupted sweep can stop it with its kernel).

A notebook runs with the project root as its working directory (:func:`notebook_cwd`) and the Jupyter
kernel :data:`KERNEL_NAME`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..core.paths import PACKAGE_DIR, resolve_output_path
from ..core.progress import PROGRESS_ENV
from ..core.utils import ConfigError, apply_set_options, claim_output_folder, load_yaml_mapping, unknown_name_error
from ..training.config import RunConfig

NOTEBOOK_DIR = PACKAGE_DIR.parent / "notebooks"
# The Jupyter kernel every notebook names in its kernelspec and every execution uses: ``python3`` is the
# Python of the environment Jupyter runs in (the project's .venv for ``make lab``), so no kernel needs
# registering and the notebooks run the same in JupyterLab, under papermill and in the tests.
KERNEL_NAME = "python3"


def notebook_names() -> list[str]:
    """The notebooks shipped in ``notebooks/``, by name (``"ablation"``, ...)."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


def resolve_notebook(name_or_path: str | Path) -> Path:
    """``"ablation"`` -> ``notebooks/ablation.ipynb``; an existing path is taken as it is.
    Anything else: a :class:`ConfigError` listing the shipped notebooks."""
    path = Path(name_or_path)
    if path.suffix != ".ipynb":
        candidate = NOTEBOOK_DIR / f"{name_or_path}.ipynb"
        if candidate.is_file():
            return candidate
    if path.is_file():
        return path
    raise ConfigError(f"notebook {str(name_or_path)!r} not found; available: {', '.join(notebook_names())}")


def notebook_cwd(notebook: Path) -> Path:
    """The working directory a notebook runs in: the project root (the folder above ``notebooks/``), which
    its relative paths (``parameters/...``, ``data/...``) are written against."""
    return Path(notebook).parent.parent


def declared_parameters(notebook: Path) -> list[str]:
    """The parameter names of ``notebook``'s ``parameters`` cell, in order (as papermill reads them)."""
    path = Path(notebook)
    return list(_declared(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _declared(path: str, mtime_ns: int) -> tuple[str, ...]:  # read again once the file changed
    import papermill as pm  # why: papermill (and nbformat/jupyter_client) is heavy; only needed here

    return tuple(pm.inspect_notebook(path))


def check_parameter_names(notebook: Path, names: Iterable[str], declared: Sequence[str], where: str = "") -> None:
    """Refuse a parameter ``notebook`` does not declare: a :class:`ConfigError` naming the first such name
    (a dotted name is checked by its first part: ``method_params.rp_lambda`` sets a key of ``method_params``)
    and the declared ones. ``where``: e.g. ``" (grid point 3)"``, appended to what is named."""
    for name in names:
        top = str(name).split(".", 1)[0]
        if top not in declared:
            raise unknown_name_error(f"parameter of notebook {Path(notebook).name}{where}", top, list(declared))


RUN_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(RunConfig))
#: The keys of a sweep's grid file (atkit.workbench.sweep.load_grid).
GRID_FILE_KEYS = ("notebook", "base", "grid", "points", "name", "slurm")


def parameter_file_kind(path: str | Path, keys: Iterable[str]) -> tuple[str, list[str]]:
    """What the YAML file ``path`` with top-level ``keys`` is: ``("run config", [])`` (only RunConfig keys:
    ``atkit train``), ``("sweep grid", [])``, ``("notebook", [NAME])`` (only parameters that notebook declares; of
    several such notebooks the one its path names, by file name or folder, e.g. ``parameters/cpu/train/x.yaml`` or
    ``mse_perception_cifar10.yaml``, else all of them), or ``("unknown", [])`` (e.g. a misspelt key)."""
    keys, path = set(keys), Path(path)
    if keys <= RUN_CONFIG_KEYS:
        return "run config", []
    if "notebook" in keys and keys <= set(GRID_FILE_KEYS):
        return "sweep grid", []
    fits = [name for name in notebook_names() if keys <= set(declared_parameters(NOTEBOOK_DIR / f"{name}.ipynb"))]
    if fits:
        named = [name for name in fits if path.stem == name or path.stem.startswith(name + "_")
                 or name in path.parent.parts]
        return "notebook", named or fits
    if keys <= set(GRID_FILE_KEYS):
        return "sweep grid", []
    return "unknown", []


def _notebook_command(name: str, path: str | Path, values: Mapping[str, Any]) -> str:
    out = values.get("out_dir") if isinstance(values.get("out_dir"), str) else f"outputs/{name}"
    return f"python -m atkit notebook {name} --params {shlex.quote(str(path))} --out {shlex.quote(str(out))}"


def refuse_other_kind(path: str | Path, values: Mapping[str, Any], wanted: str) -> None:
    """Refuse, in one line naming the command that takes it, a parameter file given to the wrong command:
    ``wanted`` is ``"run config"`` (``atkit train FILE``) or a notebook's name (``atkit notebook NAME --params FILE``).
    A file of the wanted kind, or of no known kind, passes (the command's own checks then name a bad key)."""
    kind, notebooks = parameter_file_kind(path, values)
    if kind == "unknown" or (kind == "run config" and wanted == "run config") or wanted in notebooks:
        return
    if kind == "sweep grid":
        raise ConfigError(f"{path} is a sweep grid: run python -m atkit sweep -f {shlex.quote(str(path))}")
    if kind == "run config":
        raise ConfigError(f"{path} is a run configuration, not parameters of the {wanted} notebook: run python -m "
                          f"atkit train {shlex.quote(str(path))} (or give it to the train notebook as config: "
                          f"python -m atkit notebook train --set config={shlex.quote(str(path))} --out outputs/train)")
    if len(notebooks) == 1:
        raise ConfigError(f"{path} is a parameter file of the {notebooks[0]} notebook"
                          f"{'' if wanted == 'run config' else f', not of {wanted}'}: run "
                          f"{_notebook_command(notebooks[0], path, values)}")
    raise ConfigError(f"{path} is a parameter file of a notebook ({', '.join(notebooks)}), not a run configuration: "
                      f"run {_notebook_command('NAME', path, values)} with NAME one of them")


def headless_defaults(params: dict[str, Any], declared: Sequence[str]) -> dict[str, Any]:
    """A notebook executed without a front end runs in batch mode: ``INTERACTIVE = False`` unless the
    parameters ask otherwise (for notebooks that declare it)."""
    if "INTERACTIVE" in declared:
        params.setdefault("INTERACTIVE", False)
    return params


def papermill_command(notebook: Path, executed: Path, params_file: Path, kernel_name: str = KERNEL_NAME
                      ) -> list[str]:
    """``python -m papermill NOTEBOOK EXECUTED -f PARAMS -k KERNEL --cwd ROOT``: :func:`run_notebook`'s execution
    as its own process (text progress: set ``ATKIT_PROGRESS=lines`` in its environment)."""
    return [sys.executable, "-m", "papermill", str(notebook), str(executed), "-f", str(params_file),
            "-k", kernel_name, "--cwd", str(notebook_cwd(notebook)), "--no-progress-bar"]


def run_notebook(name_or_path: str, params_file: Optional[str], out_dir: str, *, device: Optional[str] = None,
                 extra: Optional[Mapping[str, Any]] = None, kernel_name: str = KERNEL_NAME,
                 progress: bool = True, sets: Optional[Sequence[str]] = None) -> Path:
    """Execute a notebook with papermill into ``out_dir`` (executed copy and the notebook's own outputs).

    A relative ``out_dir`` is read against the project root (:func:`atkit.core.paths.resolve_output_path`).
    The notebook receives ``out_dir`` (and ``device`` when given) as parameters, on top of the
    YAML parameter file and ``sets`` (``KEY=VALUE`` strings, dotted keys, YAML values, as the CLI's
    ``--set``); unknown parameter names are refused before execution, and so is an ``out_dir`` that holds
    another notebook's results (:func:`atkit.core.utils.claim_output_folder`). The kernel shows progress as text
    lines (``ATKIT_PROGRESS=lines`` unless set): widget bars would be saved in the executed copy as dead bars;
    with ``progress`` its printed output is also copied to stderr as it comes.
    """
    path = resolve_notebook(name_or_path)
    params: dict[str, Any] = {}
    if params_file:
        params = load_yaml_mapping(params_file, "parameter file", allow_empty=True)
        if not set(params) <= set(declared_parameters(path)):  # another command's file: name that command
            refuse_other_kind(params_file, params, path.stem)
    params.update(extra or {})
    params = apply_set_options(params, sets)
    out = resolve_output_path(out_dir)  # the project root's outputs/, whatever the working directory
    params["out_dir"] = str(out)
    if device:
        params["device"] = device
    declared = declared_parameters(path)
    check_parameter_names(path, sorted(params), declared)
    headless_defaults(params, declared)
    out = claim_output_folder(out, path.stem)  # never over another notebook's results
    executed = out / path.name
    import papermill as pm  # why: papermill is heavy; only an execution needs it

    previous = os.environ.get(PROGRESS_ENV)
    os.environ.setdefault(PROGRESS_ENV, "lines")  # inherited by the kernel papermill starts
    try:
        # With progress, the kernel's printed lines (one per epoch, the evaluation's) also reach this terminal.
        pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name=kernel_name,
                            cwd=str(notebook_cwd(path)), progress_bar=progress,
                            stdout_file=sys.stderr if progress else None, stderr_file=sys.stderr if progress else None)
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
    return executed


__all__ = ["GRID_FILE_KEYS", "KERNEL_NAME", "NOTEBOOK_DIR", "RUN_CONFIG_KEYS", "check_parameter_names",
           "declared_parameters", "headless_defaults", "notebook_cwd", "notebook_names", "papermill_command",
           "parameter_file_kind", "refuse_other_kind", "resolve_notebook", "run_notebook"]

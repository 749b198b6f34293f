"""Where outputs go, whatever the working directory.

JupyterLab starts kernels in ``notebooks/``, ``papermill --cwd notebooks`` does the same, and a shell can be
anywhere: a relative ``out_dir``/``runs_dir`` read against the working directory would scatter runs over
``notebooks/outputs/`` and elsewhere, where the results notebook never looks. So every relative output path
in atkit (notebook parameters, ``RunConfig.out_dir``, ``atkit notebook --out``, ``atkit sweep --out``,
``atkit train --out-dir``) is read against one fixed place:

* ``outputs/...`` (the default of every output path) -> :func:`outputs_root` ``/ ...``;
* any other relative path -> :func:`project_root` ``/ path``;
* an absolute path (or ``~/...``) is kept as it is.

:func:`project_root` is the source checkout: the folder holding ``pyproject.toml`` (of the ``atkit``
project) just above the package, as in the editable install ``make``/``pip install -e .`` makes. For a
copy of atkit installed elsewhere (a wheel in ``site-packages``) there is no checkout; the root is then
``$ATKIT_ROOT`` when set, else ``~/atkit``. :func:`outputs_root` is ``$ATKIT_OUTPUTS`` when set (relative:
against the project root), else ``<project root>/outputs``.
"""
from __future__ import annotations

import os
from pathlib import Path

OUTPUTS_ENV = "ATKIT_OUTPUTS"
ROOT_ENV = "ATKIT_ROOT"
#: The installed ``atkit`` package folder (this file is ``atkit/core/paths.py``).
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _is_atkit_checkout(folder: Path) -> bool:
    try:
        text = (folder / "pyproject.toml").read_text()
    except OSError:
        return False
    return 'name = "atkit"' in text


def project_root() -> Path:
    """The atkit checkout holding ``pyproject.toml`` above the package; else ``$ATKIT_ROOT``, else ``~/atkit``."""
    checkout = PACKAGE_DIR.parent
    if _is_atkit_checkout(checkout):
        return checkout
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / "atkit"


def outputs_root() -> Path:
    """``$ATKIT_OUTPUTS`` (a relative value is read against :func:`project_root`), else ``<root>/outputs``."""
    env = os.environ.get(OUTPUTS_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_absolute() else project_root() / path
    return project_root() / "outputs"


def resolve_output_path(path: str | os.PathLike[str]) -> Path:
    """An output path made independent of the working directory (see the module docstring):
    ``outputs/runs`` -> ``<outputs root>/runs``, ``x/y`` -> ``<project root>/x/y``, absolute kept."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    parts = p.parts
    if parts and parts[0] == "outputs":
        return outputs_root().joinpath(*parts[1:])
    return project_root() / p


def resolve_input_path(path: str | os.PathLike[str]) -> Path:
    """A file to read (a config, a parameter file): as given when it exists from the working directory,
    else under :func:`project_root` (``parameters/paper/x.yaml`` from a kernel started in ``notebooks/``)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    candidate = project_root() / p
    return candidate if candidate.exists() else p


__all__ = ["OUTPUTS_ENV", "PACKAGE_DIR", "ROOT_ENV", "outputs_root", "project_root", "resolve_input_path", "resolve_output_path"]

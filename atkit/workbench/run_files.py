"""Finding run folders and reading their files for the results tables (:mod:`atkit.workbench.results`), whatever is in them.

* :func:`find_run_dirs` follows symbolic links (a run folder linked in from elsewhere, as the trainer's reuse
  finds it), each real folder once, without looping on a link to a parent;
* :func:`load_run` reads ``config.yaml``, ``metrics.json`` and ``eval.json``; a file that is not what atkit
  writes (another tool's ``config.yaml``, a truncated or hand-edited ``eval.json``) is named in a warning and
  left out: a foreign run folder is skipped, a damaged evaluation leaves the run's last-epoch row. One bad file
  never costs the table.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from ..core.paths import resolve_output_path
from ..core.utils import UniqueKeyLoader


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run folder at any depth under ``root`` (a folder with ``config.yaml`` and, as trainers write
    it, a ``checkpoints/`` folder or ``metrics.json``), sorted; symbolic links are followed, each real folder
    visited once. A relative ``root`` is read against the project root (:func:`atkit.core.paths.resolve_output_path`)."""
    root = resolve_output_path(root)
    if not root.is_dir():
        return []
    found, visited = set(), set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a second link to a folder already walked, or a link to a parent
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        if "config.yaml" in files and ("metrics.json" in files or "checkpoints" in dirs):
            found.add(Path(folder))
    return sorted(found)


def _read(path: Path, parse: Callable[[str], Any]) -> tuple[Any, str | None]:
    """``(data, None)``, ``(None, None)`` for a missing file, ``(None, why)`` for one that cannot be parsed."""
    if not path.is_file():
        return None, None
    try:
        return parse(path.read_text()), None
    except (OSError, ValueError, yaml.YAMLError) as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"run_dir", "config", "metrics", "eval", "skip"}`` of one run folder (missing files as None; ``skip``:
    why the folder is not an atkit run, else None). A damaged ``metrics.json`` or ``eval.json`` is a warning
    naming it and counts as absent."""
    run_dir = Path(run_dir)
    config, why = _read(run_dir / "config.yaml", lambda text: yaml.load(text, Loader=UniqueKeyLoader))
    skip = None
    if why is not None:
        skip = f"its config.yaml is not valid YAML ({why})"
    elif not isinstance(config, dict) or not isinstance(config.get("method"), str):
        skip = "its config.yaml is not an atkit run config (no 'method' in a mapping)"
    run: dict[str, Any] = {"run_dir": run_dir, "config": config if isinstance(config, dict) else {}, "skip": skip}
    for key, name in (("metrics", "metrics.json"), ("eval", "eval.json")):
        data, why = _read(run_dir / name, json.loads)
        if why is None and data is not None and not isinstance(data, dict):
            why = f"it holds a {type(data).__name__}, not a JSON object"
        elif key == "eval" and isinstance(data, dict) and not any(isinstance(data.get(k), dict)
                                                                  for k in ("final", "best")):
            why, data = "no 'final' or 'best' evaluation in it", None
        if why is not None and skip is None:
            warnings.warn(f"{str(run_dir / name)!r} is damaged ({why}); the run is listed without it")
        run[key] = data if isinstance(data, dict) else None
    return run


def safe_run_rows(run: Mapping[str, Any], run_rows: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
                  ) -> list[dict[str, Any]]:
    """``run_rows(run)``; a foreign run folder gives no rows and an ``eval.json`` that cannot be tabulated gives the
    run's last-epoch row instead, each with a warning naming the file."""
    if run.get("skip"):
        warnings.warn(f"{str(run['run_dir'])!r} skipped: {run['skip']}")
        return []
    try:
        return run_rows(run)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        where = "eval.json" if run.get("eval") is not None else "metrics.json"
        warnings.warn(f"{str(Path(run['run_dir']) / where)!r} is not what atkit writes ({type(e).__name__}: "
                      f"{str(e)[:120]}); the run is listed without it")
    if run.get("eval") is None:
        return []
    return safe_run_rows({**run, "eval": None}, run_rows)


__all__ = ["find_run_dirs", "load_run", "safe_run_rows"]

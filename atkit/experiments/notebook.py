"""An experiment's notebook, written from its registered class: the thin front end every experiment has.

:func:`experiment_notebook` builds it: a title from the class docstring, the parameters cell (papermill's
``parameters`` tag) with one line per field of the experiment's ``Params`` at its default and with its help, the
one call (:func:`atkit.experiments.runtime.run_experiment` with :func:`~atkit.experiments.runtime.notebook_params`)
and a closing note on how the claims are judged. ``python -m atkit experiments NAME --notebook`` writes it into
``notebooks/NAME.ipynb`` (never over an existing file); then its prose is yours to write.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..core.utils import ConfigError, atomic_write_text
from .base import EXPERIMENTS

#: The notebooks' kernel (``make install`` registers it; papermill runs every notebook with it).
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _literal(value: Any) -> str:
    """A Python literal papermill reads back: double-quoted strings, lists and dicts of them."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_source(name: str) -> str:
    """The parameters cell of experiment ``name``: every field of its ``Params`` at its default, with its help."""
    cls = EXPERIMENTS.get(name).Params
    lines = [f"# Parameters (papermill overrides this cell; parameters/{{smoke,demo,cpu,paper}}/{name}*.yaml). Each is a "
             "field of",
             f"# {cls.__module__}.{cls.__name__}: `python -m atkit experiments` lists them with their help and ranges."]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "out_dir" and default is None:
            default = f"outputs/{name}"  # what the runtime uses for None, written out
        text = f"{f.name} = {_literal(default)}"
        if f.name in ("eps", "step_size") and isinstance(default, float):
            text = f"{f.name} = {round(default * 255)} / 255"
        # papermill's parser stops at a quote inside a comment
        hint = str(f.metadata.get("help", "")).replace("'", "").replace('"', "")
        if hint and len(text) < 32:
            text = f"{text:32s}# {hint}"
            if len(text) > 120:
                text = text[:text.rfind(" ", 0, 116)] + " ..."
        lines.append(text)
    return "\n".join(lines)


def run_source(name: str) -> str:
    """The notebook's one call."""
    return ("from atkit.experiments import notebook_params, run_experiment\n\n"
            "# Trains (or reuses) the runs, measures, judges the claims, writes every file into out_dir.\n"
            f'result = run_experiment("{name}", **notebook_params("{name}", globals()))\n'
            "result.show()")


def experiment_notebook(name: str) -> dict[str, Any]:
    """The notebook of experiment ``name`` as an nbformat-4 dict (module docstring)."""
    cls = EXPERIMENTS.get(name)
    doc = " ".join((cls.__doc__ or "").split())

    def cell(kind: str, source: str, i: int, **extra: Any) -> dict[str, Any]:
        base = {"cell_type": kind, "id": f"{name}-{i}", "metadata": extra.pop("metadata", {}),
                "source": source.splitlines(True)}
        if kind == "code":
            base.update(execution_count=None, outputs=[])
        return base

    return {"cells": [cell("markdown", f"# {cls.source}: {name}\n\n{doc}", 0),
                      cell("code", parameters_source(name), 1, metadata={"tags": ["parameters"]}),
                      cell("code", run_source(name), 2),
                      cell("markdown", "## How the claims are judged\n\n" + "\n".join(
                          f"- {line}" for line in _claim_lines(cls)), 3)],
            "metadata": {"kernelspec": KERNEL, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _claim_lines(cls: type) -> list[str]:
    judge = getattr(cls, "judge", None)
    text = " ".join(((judge.__doc__ if judge is not None else "") or "").split())
    return [text or "each claim states its rule, its noise and the scale it was judged at (atkit.experiments.claims)"]


def write_experiment_notebook(name: str, path: str | Path) -> Path:
    """Write :func:`experiment_notebook` to ``path``, refusing an existing file (nothing written is overwritten)."""
    EXPERIMENTS.get(name)  # an unknown name: one line naming the registered ones
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{str(path)!r} exists; the notebook of {name!r} is written only where there is none")
    atomic_write_text(path, json.dumps(experiment_notebook(name), indent=1, ensure_ascii=False) + "\n")
    return path


__all__ = ["experiment_notebook", "parameters_source", "run_source", "write_experiment_notebook"]

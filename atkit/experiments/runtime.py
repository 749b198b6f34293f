"""Running an experiment: train or reuse its models, measure, judge the claims, write every file, show the result.

    from atkit.experiments import run_experiment
    result = run_experiment("mse_perception", dataset="synthetic", epochs=6)    # the notebook's one call
    result.show()                                                              # tables, figures, the claims table

:func:`run_experiment` checks the parameters (one line per bad value, before any work), trains or reuses each
planned run (:func:`atkit.training.runs.train_or_load`: an identical finished run is reused, an interrupted one resumed),
measures on the experiment's class-stratified test images (recorded in ``eval_images.json``), judges the claims
(:meth:`atkit.experiments.base.Experiment.judge`), and writes ``metrics.json`` (the parameters, the record, the
runs, the claims), ``per_image_correct.json``, one CSV per table and one PNG per figure. :func:`judge_folder`
judges a written run again from its files alone, with the same code.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..core.figures import save_figure, show_figure
from ..core.paths import resolve_output_path
from ..core.threads import apply_threads
from ..core.utils import atomic_write_json, atomic_write_text, resolve_device
from ..data import load_dataset, test_images_record, to_float_images
from ..training.runs import train_or_load
from .base import EXPERIMENTS, Context, Experiment


@dataclass
class ExperimentResult:
    """What a run of an experiment produced: ``metrics`` (as written to metrics.json), ``tables`` and ``figures``
    (as written to CSV and PNG), ``checks`` (the claims, also in metrics) and ``out`` (the folder)."""

    name: str
    out: Path
    metrics: dict[str, Any]
    tables: dict[str, Any]
    figures: dict[str, Any]

    @property
    def checks(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("checks") or [])

    def claims_table(self) -> Any:
        import pandas as pd  # why: heavy; only the display needs it

        return pd.DataFrame(self.checks, columns=["claim", "source", "measured", "verdict"])

    def show(self) -> Any:
        """Show every table and figure (in a notebook), then return the claims table (the cell's last value)."""
        try:
            from IPython.display import display  # why: IPython is only there in a notebook kernel
        except ImportError:
            display = print
        for stem, table in self.tables.items():
            print(f"{stem}:")
            display(table)
        for fig in self.figures.values():
            show_figure(fig)
        return self.claims_table()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def write_outputs(experiment: Experiment, out: Path, record: Mapping[str, Any], p: Any,
                  run_dirs: Mapping[str, str], threads: Optional[Mapping[str, Any]] = None) -> ExperimentResult:
    """Judge ``record`` and write metrics.json, per_image_correct.json, the tables and the figures into ``out``
    (``threads``: the CPU thread decision of the measurement, :func:`atkit.core.threads.apply_threads`)."""
    record = dict(record)
    per_image = record.get("per_image") or {}
    checks = [c.to_dict() for c in experiment.judge(record, p)]
    experiment.annotate(record, checks)
    tables = experiment.tables(record, p)
    for stem, table in tables.items():
        atomic_write_text(out / f"{stem}.csv", table.to_csv(index=False))
    figures = experiment.figures(record, p)
    for stem, fig in figures.items():
        save_figure(fig, out / f"{stem}.png")
    body = {k: v for k, v in record.items() if k != "per_image" and not k.startswith("_")}
    metrics = _jsonable({"experiment": experiment.name, "source": experiment.source, "params": dataclasses.asdict(p),
                         **body, "runs": dict(run_dirs), "checks": checks}
                        | ({"threads": dict(threads)} if threads is not None else {}))
    atomic_write_json(out / "metrics.json", metrics)
    if per_image:
        # The flags behind the paired intervals ("1" = correct, in eval_images.json order): the verdicts can be
        # recomputed from the files alone (judge_folder).
        atomic_write_json(out / "per_image_correct.json",
                          {name: {m: "".join("1" if c else "0" for c in flags) for m, flags in per.items()}
                           for name, per in per_image.items()})
    return ExperimentResult(experiment.name, out, metrics, tables, figures)


def run_experiment(name: str, **params: Any) -> ExperimentResult:
    """Run the experiment registered as ``name`` with ``params`` (its ``Params`` fields; the module docstring)."""
    experiment = EXPERIMENTS.get(name)()
    p = experiment.params(params)
    threads = apply_threads()  # once per process, before any work (atkit.core.threads)
    out = resolve_output_path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(p.device)
    ctx = Context(params=p, device=device, out=out)
    for label, cfg in experiment.plan(p, str(device)).items():
        model, run_dir, reused = train_or_load(cfg, reuse=p.reuse_runs, progress=p.progress)
        ctx.models[label], ctx.run_dirs[label] = model, str(run_dir)
        ctx.log(f"{label:24s} {'reused' if reused else 'trained'}: {run_dir}")
    ctx.dataset = load_dataset(p.dataset, **p.data)
    x, y, indices = ctx.dataset.eval_subset(min(p.n_eval, len(ctx.dataset.test_y)))  # class-stratified, seeded
    ctx.x, ctx.y, ctx.indices = to_float_images(x), y, indices
    atomic_write_json(out / "eval_images.json", test_images_record(ctx.dataset, indices))  # which images, for pairing
    torch.manual_seed(p.seed)
    record = experiment.measure(ctx)
    return write_outputs(experiment, out, record, p, ctx.run_dirs, threads=threads.to_dict())


def notebook_params(name: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of experiment ``name`` found in a notebook's namespace (its parameters cell, papermill's
    injected values): ``run_experiment(name, **notebook_params(name, globals()))``."""
    fields = {f.name for f in dataclasses.fields(EXPERIMENTS.get(name).Params)}
    return {key: value for key, value in namespace.items() if key in fields}


def judge_folder(name: str, folder: str | Path, rerun: Optional[str] = None) -> list[dict[str, Any]]:
    """The claims of a written run of experiment ``name``, judged again from its files by the experiment's own
    :meth:`~atkit.experiments.base.Experiment.judge` with the parameters the run recorded. ``rerun``: the command a
    claim names when the run lacks per-image data it needs (default: the experiment's own hint)."""
    experiment = EXPERIMENTS.get(name)()
    record = experiment.load_record(Path(folder))
    if rerun is not None:
        record["_rerun"] = rerun
    return [c.to_dict() for c in experiment.judge(record, experiment.params_of(record))]


__all__ = ["Context", "ExperimentResult", "judge_folder", "notebook_params", "run_experiment", "write_outputs"]

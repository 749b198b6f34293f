"""Ablations without widgets: a session that runs one training per point and tabulates the results.

:class:`AblationSession` turns a point such as ``{"method": "pgd_at+rpat", "rp_distance": "kl", "eps255": 8}``
into a :class:`~atkit.training.config.RunConfig` on top of a base config (:func:`split_point`), opens its run with the one
reuse policy of :mod:`atkit.training.runs` (an identical finished run is reused, a stopped one resumed, else a new one
trained), runs the final evaluation when the run lacks a requested attack and appends a row to its results table.
Batch mode of the ablation notebook (papermill) calls :meth:`AblationSession.run` point by point; the ipywidgets
UI (:mod:`atkit.workbench.widgets`) drives the same session from controls that :func:`param_specs` describes: one per
hyperparameter, read from the method's ``Params`` dataclass metadata (``help``, ``range``, ``choices``), so a newly
registered method gets controls without any change here.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
import time
import traceback
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import pandas as pd

from ..core.paths import resolve_output_path
from ..core.progress import Phases
from ..core.threads import apply_threads
from ..core.utils import check_choice, unknown_name_error
from ..evaluation import is_attack_name, strongest
from ..methods import COMPOSERS, METHODS, ThreatModel, get_method
from ..training.config import EvalConfig, RunConfig, load_config
from ..training.runs import open_run
from ..training.trainer import StepCallback, Trainer
from .results import run_rows
from .run_files import load_run

# Point keys that are not method hyperparameters.
POINT_KEYS = ("method", "eps", "eps255", "epochs", "seed")

# The final evaluation of a run, by name. "quick" (the widget UI's default): clean and PGD-20 on a few hundred test
# images without the gradient-masking checks, seconds on a CPU, enough to compare points while exploring (on a
# 1-epoch CPU run the base's full evaluation took about 3/4 of the time); "full": the base config's ``eval`` as it is
# (its final_attacks on final_n_test images, sanity checks as configured), the numbers to report.
QUICK_EVALUATION = {"final_attacks": ["clean", "pgd20"], "final_n_test": 500, "sanity": False}
EVALUATIONS = ("quick", "full")


def evaluation_overrides(kind: str) -> dict[str, Any]:
    """The ``eval`` keys that evaluation ``kind`` (one of :data:`EVALUATIONS`) sets over the base config's."""
    check_choice("evaluation", kind, EVALUATIONS)
    return json.loads(json.dumps(QUICK_EVALUATION)) if kind == "quick" else {}


def describe_evaluation(ev: EvalConfig, test_images: Optional[int] = None) -> str:
    """``"clean, pgd20 on up to 500 test images; no sanity checks"``: what a final evaluation with ``ev`` runs
    (``test_images``: the size of the test set, when known, for the exact count)."""
    if test_images is not None:
        images = f"{min(ev.final_n_test or test_images, test_images)} test images"
    else:
        images = "the whole test set" if ev.final_n_test is None else f"up to {ev.final_n_test} test images"
    robust = [a for a in ev.final_attacks if a not in ("clean", "random")]
    checks = (f"sanity checks on up to {ev.sanity_n_test} of them" if ev.sanity and robust else "no sanity checks")
    return f"{', '.join(ev.final_attacks)} on {images}; {checks}"


def evaluation_covers(run_dir: str | Path, ev: EvalConfig, test_images: int, kind: str = "full") -> bool:
    """Whether ``run_dir/eval.json`` already serves a final evaluation ``kind`` with settings ``ev``. "full": every
    attack of ``ev``, on at least as many test images, with sanity checks when asked. "quick": any final evaluation,
    so that a quick request never replaces one that is there (a run the table then shows with what evaluated it)."""
    try:
        final = json.loads((Path(run_dir) / "eval.json").read_text()).get("final") or {}
    except (OSError, ValueError, AttributeError):
        return False
    if check_choice("evaluation", kind, EVALUATIONS) == "quick":
        return bool(final.get("accuracy"))
    wanted = min(ev.final_n_test or test_images, test_images)
    robust = any(a not in ("clean", "random") for a in ev.final_attacks)
    return (set(ev.final_attacks) <= set(final.get("accuracy") or {}) and int(final.get("n") or 0) >= wanted
            and (not (ev.sanity and robust) or bool(final.get("checks"))))


# ------------------------------------------------------------------------------ parameter specs
@dataclass(frozen=True)
class ParamSpec:
    """What a control needs to know about one hyperparameter (read from its dataclass field).

    ``kind``: ``bool``, ``choice``, ``int``, ``float`` or ``text`` (free text parsed by
    :func:`parse_text_value`: numbers, ``None``, or a word such as RPAT's ``beta-``).
    """

    name: str
    kind: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    optional: bool = False


def _params_objects(method: Any) -> list[Any]:
    """The method's Params object, then its base method's (DUCAT keeps the base on ``.base``)."""
    out, obj = [], method
    while obj is not None:
        if dataclasses.is_dataclass(getattr(obj, "params", None)):
            out.append(obj.params)
        obj = getattr(obj, "base", None)
    return out


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def param_specs(method_name: str) -> list[ParamSpec]:
    """One :class:`ParamSpec` per hyperparameter of ``method_name`` (composites included), in field order."""
    method = get_method(method_name)
    specs, seen = [], set()
    for params in _params_objects(method):
        cls = type(params)
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # forward references that cannot be resolved: fall back to the default's type
            hints = {}
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            default = getattr(params, f.name)
            tp, optional = _strip_optional(hints.get(f.name, type(default) if default is not None else Any))
            choices = tuple(f.metadata.get("choices") or ())
            low, high = f.metadata.get("range", (None, None))
            if tp is bool or set(choices) == {False, True}:
                kind = "choice" if optional or None in choices else "bool"
                if kind == "choice" and not choices:
                    choices = (None, False, True)
            elif choices:
                kind = "choice"
            elif tp is int and not optional:
                kind = "int"
            elif tp is float and not optional:
                kind = "float"
            else:
                kind = "text"
            specs.append(ParamSpec(f.name, kind, default, str(f.metadata.get("help", "")), choices, low, high,
                                   optional or default is None))
    return specs


def parse_text_value(text: str) -> Any:
    """Free text to a value: ``""``/``None`` -> None, ``true``/``false`` -> bool, numbers -> int/float
    (``8/255`` is allowed), anything else stays a string."""
    s = str(text).strip()
    if s == "" or s.lower() == "none":
        return None
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den)
        return float(s)
    except ValueError:
        return s


def method_choices() -> list[str]:
    """Registered methods, then every ``base+add-on`` composite that can be built."""
    names = sorted(METHODS)
    composites = []
    for addon in sorted(COMPOSERS):
        for base in names:
            try:
                get_method(f"{base}+{addon}")
            except Exception:  # this add-on does not combine with this base (e.g. already has the term)
                continue
            composites.append(f"{base}+{addon}")
    return names + composites


# ------------------------------------------------------------------------------------- the engine
def split_point(point: Mapping[str, Any], method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config overrides, method hyperparameters)`` of a point.

    ``method_params.X`` and ``config.X`` are explicit; a bare name is a hyperparameter of the point's
    method when it has one (DUCAT's ``start_epoch`` is its window start, not the config key), else one of
    ``eps`` (absolute), ``eps255`` (in 1/255), ``epochs``, ``seed`` or any RunConfig key.
    """
    specs = {s.name for s in param_specs(method)}
    config_keys = {f.name for f in dataclasses.fields(RunConfig)}
    overrides: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    for key, value in point.items():
        if key == "method":
            continue
        if key.startswith("method_params."):
            hparams[key.split(".", 1)[1]] = value
        elif key == "method_params":
            hparams.update(value or {})
        elif key.startswith("config."):
            overrides[key.split(".", 1)[1]] = value
        elif key in specs:
            hparams[key] = value
        elif key in ("eps", "eps255") or key in config_keys:
            overrides[key] = value
        else:
            raise unknown_name_error(f"point key (hyperparameter of {method!r} or config key)", key,
                                     sorted(specs | config_keys | {"eps255"}))
    return overrides, hparams


class AblationSession:
    """Runs points on top of ``base`` (a RunConfig dict) and keeps one results row per run.

    ``runs_dir``: where run folders go (and where identical finished runs are reused from when ``reuse``);
    a relative one is read against the project root (:mod:`atkit.core.paths`).
    """

    def __init__(self, base: Mapping[str, Any], *, runs_dir: str | Path = "outputs/runs", reuse: bool = True,
                 progress: bool = False) -> None:
        self.base = dict(base)
        self.base["out_dir"] = str(runs_dir)
        load_config(self.base)  # refuse a bad base before any run
        # In the thread that builds the session (the notebook's): the widget UI's worker threads inherit the count,
        # while one set in a worker thread would not reach this one (atkit.core.threads).
        self.threads = apply_threads(self.base.get("threads"))
        self.runs_dir = resolve_output_path(runs_dir)
        self.reuse = reuse
        self.progress = progress
        self.rows: list[dict[str, Any]] = []
        self.trainer: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- configs ----------------------------------------------------------------------------------
    def config_for(self, point: Mapping[str, Any], evaluation: str = "full") -> RunConfig:
        """The RunConfig of ``point`` (see :func:`split_point`); eps changes keep the base step/eps ratio.
        ``evaluation``: "full" (the base's ``eval``) or "quick" (:func:`evaluation_overrides` over it; the final
        evaluation is not part of a run's identity)."""
        d = json.loads(json.dumps(self.base))
        d["eval"] = {**(d.get("eval") or {}), **evaluation_overrides(evaluation)}
        method = point.get("method", d.get("method", "pgd_at"))
        overrides, hparams = split_point(point, method)
        if method != d.get("method"):
            d["method_params"] = {}
        d["method"] = method
        d["method_params"] = {**(d.get("method_params") or {}), **hparams}
        eps = overrides.pop("eps", None)
        if "eps255" in overrides:
            eps = float(overrides.pop("eps255")) / 255.0
        if eps is not None:
            threat = dict(d.get("threat") or {})
            current = ThreatModel.from_dict(threat)
            threat.update(eps=float(eps), step_size=current.step_size * float(eps) / current.eps)
            d["threat"] = threat
        if "eval" in overrides and isinstance(overrides["eval"], Mapping):
            overrides["eval"] = {**(d.get("eval") or {}), **overrides["eval"]}
        d.update(overrides)
        return load_config(d)

    # -- running ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """End the current run after its current step (also when it is still being set up)."""
        self._stop.set()
        trainer = self.trainer
        if trainer is not None:
            trainer.request_stop()

    def run(self, point: Mapping[str, Any], *, callbacks: Sequence[Callable] = (),
            on_step: Optional[StepCallback] = None,
            on_trainer: Optional[Callable[[Trainer], None]] = None,
            on_status: Optional[Callable[[str], None]] = None,
            evaluation: str = "full") -> dict[str, Any]:
        """Train ``point`` to the end (or until :meth:`request_stop`), evaluate, append and return its row.

        ``evaluation``: the final evaluation, "full" (the base config's) or "quick" (:data:`QUICK_EVALUATION`).
        A finished identical run under ``runs_dir`` is reused (evaluated again only when its ``eval.json`` does not
        serve the request, :func:`evaluation_covers`); a stopped or interrupted one is resumed. Errors do not propagate: the
        row gets ``status = "failed"`` and ``error``. ``on_status(text)``: what the final evaluation is
        doing (attack by attack, sanity check by check, images done and ETA), for a status line. ``callbacks``
        (per epoch) and ``on_step`` (per optimiser step, :data:`atkit.training.trainer.StepCallback`) go to the trainer.
        """
        self._stop.clear()
        began = time.time()
        point = dict(point)
        row: dict[str, Any]
        run_dir: Optional[Path] = None
        reused = False
        try:
            config = self.config_for(point, evaluation)
            trainer, how = open_run(config, runs_dir=self.runs_dir, reuse=self.reuse, progress=self.progress)
            if how != "new":  # a reused or resumed run has the eval settings it was created with; this run asks these
                trainer.config.eval = copy.deepcopy(config.eval)
                trainer.state.config.eval = trainer.config.eval
            run_dir, reused = trainer.run_dir, how == "reused"
            self.trainer = trainer
            if not reused:
                trainer.callbacks.extend(callbacks)
                if on_step is not None:
                    trainer.step_callbacks.append(on_step)
                if on_trainer is not None:
                    on_trainer(trainer)
                if self._stop.is_set():
                    trainer.request_stop()
                trainer.fit()
            if trainer.status == "finished" or reused:
                if not evaluation_covers(run_dir, config.eval, len(trainer.dataset.test_y), evaluation):
                    trainer.final_evaluation(attacks=list(config.eval.final_attacks),
                                             progress=Phases("final evaluation", show=self.progress,
                                                             on_status=on_status))
            row = self._row(run_dir, point, reused)
        except Exception as e:  # noqa: BLE001 - a failing point is reported in the table, not raised
            row = {"point": point_label(point), "status": "failed", "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(), "run_dir": str(run_dir) if run_dir else None,
                   "method": point.get("method", self.base.get("method"))}
        finally:
            self.trainer = None
        row["seconds"] = round(time.time() - began, 2)
        with self._lock:
            self.rows.append(row)
        return row

    def _row(self, run_dir: Path, point: Mapping[str, Any], reused: bool) -> dict[str, Any]:
        run = load_run(run_dir)
        tidy = run_rows(run)
        first = tidy[0]
        threat = run["config"].get("threat") or {}
        row: dict[str, Any] = {
            "point": point_label(point), "label": first["label"], "method": first["method"],
            "method_params": first["method_params"], "eps255": round(float(threat.get("eps", 8 / 255)) * 255, 3),
            "epochs": first["epochs"], "seed": first["seed"], "status": first["status"],
            "epochs_done": first["epochs_done"], "partial_epoch": _partial_epoch(run["metrics"]),
            "best_epoch": first["best_epoch"], "reused": reused, "run_dir": str(run_dir),
        }
        final = (run.get("eval") or {}).get("final") or {}
        if final:  # what produced the final_* numbers: a quick evaluation reads as such in the table
            row["evaluated"] = (f"{final.get('n')} img" + (", sanity checks" if final.get("checks") else "")
                                + (", " + ", ".join(final.get("accuracy") or {})))
        for key, value in point.items():
            row[f"param:{key}"] = value if not isinstance(value, (list, dict)) else json.dumps(value)
        # Dummy-class runs: the worst case over the protocols is the headline; older runs without it, the published one.
        shown = ("-", "worst_case") if any(rec.get("protocol") == "worst_case" for rec in tidy) else ("-", "published")
        for rec in tidy:
            if rec.get("protocol") not in shown:
                continue
            # One attack per column: the final evaluation under final_/best_, the per-epoch evaluation of a run
            # without one (stopped) under last_epoch_, and Mean/NRR named by the attack they use.
            tag = "last_epoch" if rec["checkpoint"] == "last epoch" else rec["checkpoint"]
            robust = rec.get("robust_metric")
            for key, value in rec.items():
                if key in _SCORE_KEYS or is_attack_name(key):
                    if key == "robust_metric" or value is None or (isinstance(value, float) and math.isnan(value)):
                        continue
                    if key in ("mean", "nrr"):
                        if not isinstance(robust, str):
                            continue
                        key = f"{key}[{robust}]"
                    row[f"{tag}_{key}"] = value
            if tag in ("final", "last_epoch"):
                row["final_source"] = rec["checkpoint"]
                if tag == "last_epoch":
                    row["last_epoch"] = rec.get("epoch")
        return row

    # -- results ----------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """All rows so far (one per run), newest last."""
        with self._lock:
            return pd.DataFrame(list(self.rows))

    def tradeoff(self, checkpoint: str = "final") -> pd.DataFrame:
        """``label``, ``clean``, ``robust``, ``robust_metric``, ``source`` per run, for the scatter: one robust
        attack for all points (the strongest any run has; runs without it are left out). A run without a final
        evaluation (stopped) enters with its last evaluated epoch when that measured the same attack."""
        candidates = []
        for r in self.table().to_dict(orient="records"):
            for tag in ((checkpoint, "last_epoch") if checkpoint == "final" else (checkpoint,)):
                values = {k[len(tag) + 1:]: v for k, v in r.items() if k.startswith(f"{tag}_") and not _nan(v)
                          and isinstance(v, (int, float)) and not isinstance(v, bool)}
                if "clean" in values:
                    candidates.append((r, tag, values))
                    break
        metric = strongest({name for _, _, values in candidates for name in values if "[" not in name})
        rows = []
        for r, tag, values in candidates:
            if metric is None or metric not in values:
                continue
            rows.append({"label": r.get("point") or r.get("label"), "method": r.get("method"),
                         "clean": values["clean"], "robust": values[metric], "robust_metric": metric,
                         "status": r.get("status"), "source": tag.replace("_", " ")})
        return pd.DataFrame(rows, columns=["label", "method", "clean", "robust", "robust_metric", "status", "source"])


_SCORE_KEYS = {"mean", "nrr", "robust_metric"}


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _partial_epoch(metrics: Optional[Mapping[str, Any]]) -> str:
    """``"epoch 4: 12/50 steps (not counted)"`` when the run was stopped inside an epoch, else ``""``."""
    history = (metrics or {}).get("history") or []
    last = history[-1] if history else {}
    if not last.get("partial"):
        return ""
    return f"epoch {last.get('epoch')}: {last.get('steps')}/{last.get('steps_per_epoch')} steps (not counted)"


def results_columns(table: pd.DataFrame) -> list[str]:
    """The columns the UI shows: point, status, epochs done (and a partial epoch), what the final evaluation ran
    (images, sanity checks, attacks), then one column per
    (checkpoint, attack) and Mean/NRR named by their attack (``final_mean[pgd20]``), then seconds and reuse."""
    lead = [c for c in ("point", "status", "epochs_done", "partial_epoch", "evaluated") if c in table.columns]
    metrics = [c for c in table.columns if c.startswith(("final_", "best_", "last_epoch_")) and c != "final_source"]
    tail = [c for c in ("seconds", "reused") if c in table.columns]
    return lead + metrics + tail


def point_label(point: Mapping[str, Any]) -> str:
    """``"method=pgd_at+rpat, rp_distance=kl"``: a point, readable."""
    if not point:
        return "base"
    parts = []
    for k, v in point.items():
        parts.append(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}")
    return ", ".join(parts)


__all__ = ["EVALUATIONS", "POINT_KEYS", "QUICK_EVALUATION", "AblationSession", "ParamSpec", "describe_evaluation",
           "evaluation_covers", "evaluation_overrides", "method_choices", "param_specs", "parse_text_value", "point_label",
           "results_columns", "split_point"]

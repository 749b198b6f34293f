"""Ablations: a session that runs one training per point and tabulates the results, and its ipywidgets UI.

:class:`AblationSession` is the engine (no widgets): it turns a point such as
``{"method": "pgd_at+rpat", "rp_distance": "kl", "eps255": 8}`` into a :class:`~atkit.config.RunConfig`
on top of a base config, trains it (or reuses an identical finished run, or resumes a stopped one),
runs the final evaluation and appends a row to its results table. Batch mode (papermill) calls
:meth:`AblationSession.run` point by point.

:class:`AblationUI` puts controls on top: a method menu and, for the chosen method, one control per
hyperparameter built from its ``Params`` dataclass metadata (``help``, ``range``, ``choices``; so a
newly registered method gets controls without any change here), eps and epochs; a Run button that
trains in a background thread with a live learning-curve plot and a progress bar; a Stop button
(:meth:`atkit.train.Trainer.request_stop`: the run ends after the current step and keeps what it
measured); a results table and a clean-vs-robust trade-off plot that grow with each run. Every
handler is a plain method, so the UI can be driven and tested without a front end.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
import traceback
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import pandas as pd

from .paths import resolve_output_path
from .utils import ConfigError

# Point keys that are not method hyperparameters.
POINT_KEYS = ("method", "eps", "eps255", "epochs", "seed")


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
    from .methods import get_method

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
    from .methods import COMPOSERS, METHODS, get_method

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
    from .config import RunConfig

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
            from .utils import unknown_name_error

            raise unknown_name_error(f"point key (hyperparameter of {method!r} or config key)", key,
                                     sorted(specs | config_keys | {"eps255"}))
    return overrides, hparams


class AblationSession:
    """Runs points on top of ``base`` (a RunConfig dict) and keeps one results row per run.

    ``runs_dir``: where run folders go (and where identical finished runs are reused from when ``reuse``);
    a relative one is read against the project root (:mod:`atkit.paths`).
    """

    def __init__(self, base: Mapping[str, Any], *, runs_dir: str | Path = "outputs/runs", reuse: bool = True,
                 progress: bool = False) -> None:
        from .config import load_config

        self.base = dict(base)
        self.base["out_dir"] = str(runs_dir)
        load_config(self.base)  # refuse a bad base before any run
        self.runs_dir = resolve_output_path(runs_dir)
        self.reuse = reuse
        self.progress = progress
        self.rows: list[dict[str, Any]] = []
        self.trainer: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- configs ----------------------------------------------------------------------------------
    def config_for(self, point: Mapping[str, Any]):
        """The RunConfig of ``point`` (see :func:`split_point`); eps changes keep the base step/eps ratio."""
        from .config import load_config

        d = json.loads(json.dumps(self.base))
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
            from .methods import ThreatModel

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
            on_step: Optional[Callable[[Any, int], None]] = None,
            on_trainer: Optional[Callable[[Any], None]] = None,
            on_status: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
        """Train ``point`` to the end (or until :meth:`request_stop`), evaluate, append and return its row.

        A finished identical run under ``runs_dir`` is reused (re-evaluated only when it lacks a
        requested final attack); a stopped or interrupted one is resumed. Errors do not propagate: the
        row gets ``status = "failed"`` and ``error``. ``on_status(text)``: what the final evaluation is
        doing (attack by attack, sanity check by check, images done and ETA), for a status line.
        """
        from .progress import Phases
        from .results import has_final_eval, open_run

        self._stop.clear()
        began = time.time()
        point = dict(point)
        row: dict[str, Any]
        run_dir: Optional[Path] = None
        reused = False
        try:
            config = self.config_for(point)
            trainer, how = open_run(config, runs_dir=self.runs_dir, reuse=self.reuse, progress=self.progress)
            run_dir, reused = trainer.run_dir, how == "reused"
            self.trainer = trainer
            if not reused:
                trainer.callbacks.extend(callbacks)
                if on_step is not None:
                    _hook_steps(trainer, on_step)
                if on_trainer is not None:
                    on_trainer(trainer)
                if self._stop.is_set():
                    trainer.request_stop()
                trainer.fit()
            if trainer.status == "finished" or reused:
                if not has_final_eval(run_dir, config.eval.final_attacks):
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
        from .results import load_run, run_rows

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
                if key in _METRIC_KEYS or key.startswith("pgd") or key.startswith("cw"):
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
        from .results import robust_metric

        candidates = []
        for r in self.table().to_dict(orient="records"):
            for tag in ((checkpoint, "last_epoch") if checkpoint == "final" else (checkpoint,)):
                values = {k[len(tag) + 1:]: v for k, v in r.items() if k.startswith(f"{tag}_") and not _nan(v)
                          and isinstance(v, (int, float)) and not isinstance(v, bool)}
                if "clean" in values:
                    candidates.append((r, tag, values))
                    break
        metric = robust_metric({name for _, _, values in candidates for name in values if "[" not in name})
        rows = []
        for r, tag, values in candidates:
            if metric is None or metric not in values:
                continue
            rows.append({"label": r.get("point") or r.get("label"), "method": r.get("method"),
                         "clean": values["clean"], "robust": values[metric], "robust_metric": metric,
                         "status": r.get("status"), "source": tag.replace("_", " ")})
        return pd.DataFrame(rows, columns=["label", "method", "clean", "robust", "robust_metric", "status", "source"])


_METRIC_KEYS = {"clean", "aa", "apgd", "fgsm", "random", "mean", "nrr", "robust_metric"}


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
    """The columns the UI shows: point, status, epochs done (and a partial epoch), then one column per
    (checkpoint, attack) and Mean/NRR named by their attack (``final_mean[pgd20]``), then seconds and reuse."""
    lead = [c for c in ("point", "status", "epochs_done", "partial_epoch") if c in table.columns]
    metrics = [c for c in table.columns if c.startswith(("final_", "best_", "last_epoch_")) and c != "final_source"]
    tail = [c for c in ("seconds", "reused") if c in table.columns]
    return lead + metrics + tail


def results_html(table: pd.DataFrame) -> str:
    """:func:`results_columns` of the session's table as HTML (blank where a run did not measure a column)."""
    if table.empty:
        return "<i>no runs yet</i>"
    return table[results_columns(table)].to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="")


def point_label(point: Mapping[str, Any]) -> str:
    """``"method=pgd_at+rpat, rp_distance=kl"``: a point, readable."""
    if not point:
        return "base"
    parts = []
    for k, v in point.items():
        parts.append(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}")
    return ", ".join(parts)


def _hook_steps(trainer: Any, on_step: Callable[[Any, int], None]) -> None:
    """Call ``on_step(trainer, steps_done)`` after every optimiser step (through the method's ``after_step``)."""
    method = trainer.method
    original = method.after_step
    counter = {"n": trainer.epoch * trainer.steps_per_epoch}

    def after_step(model: Any, ctx: Any) -> None:
        original(model, ctx)
        counter["n"] = ctx.epoch * trainer.steps_per_epoch + ctx.step + 1
        on_step(trainer, counter["n"])

    method.after_step = after_step


def tradeoff_scatter(points: pd.DataFrame, title: Optional[str] = None):
    """Clean vs robust accuracy of the runs so far (a matplotlib Figure, not attached to pyplot)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    sns.set_theme(style="whitegrid")
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    if points.empty:
        ax.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.scatterplot(data=points, x="clean", y="robust", hue="label", style="method", s=70, ax=ax)
        ax.legend(fontsize=6, loc="best")
    metrics = sorted(set(points["robust_metric"])) if not points.empty else []
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"robust accuracy (%) [{', '.join(metrics) or 'n/a'}]")
    ax.set_title(title or "trade-off of the runs (final model)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- UI
def make_control(spec: ParamSpec):
    """An ipywidgets control for one hyperparameter, showing its help as tooltip and its range."""
    import ipywidgets as W

    style = {"description_width": "170px"}
    layout = W.Layout(width="360px")
    rng = ""
    if spec.low is not None or spec.high is not None:
        rng = f" [{'' if spec.low is None else spec.low}, {'' if spec.high is None else spec.high}]"
    tooltip = (spec.help + rng).strip()
    if spec.kind == "bool":
        w = W.Checkbox(value=bool(spec.default), description=spec.name, style=style, indent=False)
    elif spec.kind == "choice":
        options = [("default (None)" if c is None else str(c), c) for c in spec.choices]
        w = W.Dropdown(options=options, value=spec.default, description=spec.name, style=style, layout=layout)
    elif spec.kind in ("int", "float"):
        big = 10**9
        low = -big if spec.low is None else spec.low
        high = big if spec.high is None else spec.high
        if spec.kind == "int":
            low, high = int(low), int(high)
        cls = W.BoundedIntText if spec.kind == "int" else W.BoundedFloatText
        kwargs = {} if spec.kind == "int" else {"step": _step_for(spec)}
        w = cls(value=spec.default, min=low, max=high, description=spec.name + rng, style=style, layout=layout,
                **kwargs)
    else:
        w = W.Text(value="" if spec.default is None else str(spec.default), placeholder="None",
                   description=spec.name, style=style, layout=layout)
    w.tooltip = tooltip
    return w


def _step_for(spec: ParamSpec) -> float:
    if spec.high is not None and spec.low is not None and spec.high - spec.low <= 1:
        return 0.05
    return 0.1 if abs(spec.default or 0) < 10 else 1.0


def read_control(spec: ParamSpec, widget: Any) -> Any:
    if spec.kind == "text":
        return parse_text_value(widget.value)
    if spec.kind == "float":
        return float(widget.value)
    if spec.kind == "int":
        return int(widget.value)
    return widget.value


class AblationUI:
    """Controls, Run/Stop, live plot, progress bar, results table and trade-off plot for a session.

    ``methods``: the menu (default: every registered method and composite); ``method`` /
    ``method_params``: the first selection; ``live_plot``: redraw the learning curves after each epoch.
    """

    def __init__(self, session: AblationSession, *, methods: Optional[Sequence[str]] = None,
                 method: Optional[str] = None, method_params: Optional[Mapping[str, Any]] = None,
                 live_plot: bool = True) -> None:
        import ipywidgets as W

        self.session = session
        self.live_plot = live_plot
        self.thread: Optional[threading.Thread] = None
        self.last_row: Optional[dict[str, Any]] = None
        base_cfg = session.config_for({})
        methods = list(methods or method_choices())
        first = method or session.base.get("method") or methods[0]
        if first not in methods:
            methods.insert(0, first)
        self.method = W.Dropdown(options=methods, value=first, description="method",
                                 style={"description_width": "170px"}, layout=W.Layout(width="360px"))
        self.params_box = W.VBox([])
        self.specs: dict[str, ParamSpec] = {}
        self.controls: dict[str, Any] = {}
        self._build_params(first, method_params or (session.base.get("method_params")
                                                    if first == session.base.get("method") else None))
        self.method.observe(self.on_method_change, names="value")
        threat = base_cfg.threat_model()
        style = {"description_width": "170px"}
        self.eps255 = W.BoundedFloatText(value=round(threat.eps * 255, 4), min=0.0, max=255.0, step=0.5,
                                         description=f"eps ({threat.norm}, x/255)", style=style,
                                         layout=W.Layout(width="360px"))
        self.epochs = W.BoundedIntText(value=base_cfg.resolved_epochs(), min=1, max=10000, description="epochs",
                                       style=style, layout=W.Layout(width="360px"))
        self.seed = W.BoundedIntText(value=base_cfg.seed, min=0, max=2**31 - 1, description="seed", style=style,
                                     layout=W.Layout(width="360px"))
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(self.on_run)
        self.stop_button.on_click(self.on_stop)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", bar_style="info")
        self.status = W.HTML(value="ready")
        self.live = W.Image(format="png", layout=W.Layout(width="760px"))
        self.table = W.HTML(value="<i>no runs yet</i>")
        self.tradeoff_plot = W.Image(format="png", layout=W.Layout(width="480px"))
        self.log = W.Output()
        left = W.VBox([self.method, self.params_box, self.eps255, self.epochs, self.seed,
                       W.HBox([self.run_button, self.stop_button]), self.progress, self.status])
        self.widget = W.VBox([W.HBox([left, self.live]), W.HBox([self.table, self.tradeoff_plot]), self.log])

    # -- controls ---------------------------------------------------------------------------------
    def _build_params(self, method: str, values: Optional[Mapping[str, Any]] = None) -> None:
        specs = param_specs(method)
        self.specs = {s.name: s for s in specs}
        self.controls = {}
        for spec in specs:
            w = make_control(spec)
            if values and spec.name in values:
                v = values[spec.name]
                w.value = ("" if v is None else str(v)) if spec.kind == "text" else v
            self.controls[spec.name] = w
        self.params_box.children = tuple(self.controls.values())

    def on_method_change(self, change: Mapping[str, Any]) -> None:
        """Rebuild the hyperparameter controls for the newly selected method."""
        self._build_params(change["new"])

    def current_point(self) -> dict[str, Any]:
        """The point the controls describe: method, the hyperparameters that differ from the defaults,
        eps (x/255), epochs and seed."""
        point: dict[str, Any] = {"method": self.method.value}
        for name, spec in self.specs.items():
            value = read_control(spec, self.controls[name])
            if value != spec.default:
                point[name] = value
        point["eps255"] = float(self.eps255.value)
        point["epochs"] = int(self.epochs.value)
        point["seed"] = int(self.seed.value)
        return point

    # -- run / stop -------------------------------------------------------------------------------
    def on_run(self, _button: Any = None) -> Optional[threading.Thread]:
        """Start the current point in a background thread (ignored while a run is going)."""
        if self.thread is not None and self.thread.is_alive():
            return None
        try:
            point = self.current_point()
            config = self.session.config_for(point)
        except ConfigError as e:
            self.status.value = f"<b style='color:#b00'>not started:</b> {e}"
            return None
        self.run_button.disabled = True
        self.stop_button.disabled = False
        self.progress.value = 0
        self.progress.max = max(1, config.resolved_epochs())
        self.progress.bar_style = "info"
        self.status.value = f"running {point_label(point)} ..."
        self.thread = threading.Thread(target=self._worker, args=(point,), name="atkit-ablation-run", daemon=True)
        self.thread.start()
        return self.thread

    def on_stop(self, _button: Any = None) -> None:
        """Ask the running training to end after its current step; what it measured is kept."""
        self.session.request_stop()
        self.stop_button.disabled = True
        self.status.value = "stopping after the current step ..."

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Join the background run; True when it has ended."""
        if self.thread is None:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _worker(self, point: Mapping[str, Any]) -> None:
        label = point_label(point)
        last = {"epoch": "", "shown": 0.0}

        def show(text: str) -> None:
            self.status.value = f"{label}: {text}"

        def on_trainer(trainer: Any) -> None:
            self.progress.max = max(1, trainer.epochs * trainer.steps_per_epoch)
            self.progress.value = trainer.epoch * trainer.steps_per_epoch
            show(f"training epoch {trainer.epoch + 1}/{trainer.epochs} ...")

        def on_step(trainer: Any, steps_done: int) -> None:
            self.progress.value = min(steps_done, self.progress.max)
            epoch, step = divmod(steps_done - 1, trainer.steps_per_epoch)
            now = time.time()
            if step + 1 == trainer.steps_per_epoch:  # the epoch's steps are done: its evaluation comes next
                show(f"epoch {epoch + 1}/{trainer.epochs}: evaluating on {len(trainer.eval_y)} test images ..."
                     + (f" (last: {last['epoch']})" if last["epoch"] else ""))
            elif now - last["shown"] >= 0.5:
                last["shown"] = now
                show(f"training epoch {epoch + 1}/{trainer.epochs}, step {step + 1}/{trainer.steps_per_epoch}"
                     + (f" (last: {last['epoch']})" if last["epoch"] else ""))

        def on_epoch(trainer: Any, record: Mapping[str, Any]) -> None:
            acc = {k: v for k, v in record.items() if k.startswith("test_") and k.endswith("_acc")}
            last["epoch"] = (f"epoch {record.get('epoch')}{' (partial)' if record.get('partial') else ''} "
                             + ", ".join(f"{k[5:-4]} {v:.1f}%" for k, v in acc.items()))
            show(last["epoch"])
            if self.live_plot:
                self._draw_live(trainer.history)

        try:
            row = self.session.run(point, callbacks=[on_epoch], on_step=on_step, on_trainer=on_trainer,
                                   on_status=show)
            self.last_row = row
            self.progress.bar_style = {"finished": "success", "stopped": "warning"}.get(row.get("status"), "danger")
            msg = f"{row.get('status')}: {point_label(point)} ({row.get('seconds', 0):.1f} s)"
            if row.get("error"):
                msg += f" <b style='color:#b00'>{row['error']}</b>"
                self.log.append_stderr(row.get("traceback", "") + "\n")
            self.status.value = msg
            self.refresh_results()
        except Exception:  # noqa: BLE001 - never let the thread die silently
            self.log.append_stderr(traceback.format_exc())
            self.status.value = "<b style='color:#b00'>error</b> (see the log below)"
        finally:
            self.run_button.disabled = False
            self.stop_button.disabled = True

    def _draw_live(self, history: Sequence[Mapping[str, Any]]) -> None:
        from .results import figure_png, learning_curves_figure

        try:
            self.live.value = figure_png(learning_curves_figure(list(history)), dpi=80)
        except Exception:  # noqa: BLE001 - a plotting problem must not stop training
            self.log.append_stderr(traceback.format_exc())

    def refresh_results(self) -> None:
        """Redraw the results table and the trade-off plot from the session's rows."""
        from .results import figure_png

        self.table.value = results_html(self.session.table())
        self.tradeoff_plot.value = figure_png(tradeoff_scatter(self.session.tradeoff()), dpi=80)

    def display(self) -> None:
        from IPython.display import display

        display(self.widget)


# ----------------------------------------------------------------------------- interactive or batch
PAPERMILL_CELL_COMMENT = "# Parameters\n"  # the first line of the cell papermill injects (its default comment)


def _parent_is_papermill() -> bool:
    """Whether the kernel's parent process is papermill's command line (Linux ``/proc``; else False)."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    # ``papermill ...`` (its console script) or ``python -m papermill ...`` (atkit sweep's points).
    return any(Path(a).name == "papermill" for a in argv[:2]) or any(
        a == "-m" and b == "papermill" for a, b in zip(argv, argv[1:]))


def run_by_papermill() -> bool:
    """Whether papermill executes this kernel's notebook: papermill's injected-parameters cell (its first line
    is ``# Parameters``) is in the kernel's input history, or the kernel's parent process is papermill."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell is not None else []
    if any(isinstance(src, str) and src.startswith(PAPERMILL_CELL_COMMENT) for src in history):
        return True
    return shell is not None and _parent_is_papermill()


def has_front_end() -> bool:
    """Whether this code runs in a Jupyter kernel (a front end such as JupyterLab can show widgets)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive_mode(value: Optional[bool]) -> bool:
    """``INTERACTIVE`` of the ablation notebook: ``True``/``False`` as given; ``None`` (its default): the widget
    UI when a Jupyter front end runs the notebook and papermill does not (``atkit notebook`` and ``atkit sweep``
    also pass ``INTERACTIVE=False``), so enabling the UI never needs an edit of the tracked notebook."""
    if value is not None:
        if not isinstance(value, bool):
            raise ConfigError(f"INTERACTIVE={value!r} is not accepted; choose None (automatic), True or False")
        return value
    return has_front_end() and not run_by_papermill()


__all__ = ["AblationSession", "AblationUI", "ParamSpec", "has_front_end", "interactive_mode", "make_control",
           "method_choices", "param_specs", "parse_text_value", "point_label", "read_control", "results_columns",
           "results_html", "run_by_papermill", "split_point", "tradeoff_scatter"]

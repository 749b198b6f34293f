"""The ipywidgets UI of the ablation notebook, on top of the engine in :mod:`atkit.workbench.ablation`.

:class:`AblationUI` puts controls on a :class:`~atkit.workbench.ablation.AblationSession`: a method menu and, for the
chosen method, one control per hyperparameter (:func:`~atkit.workbench.ablation.param_specs`), eps and epochs; a Run
button that trains in a background thread with a live learning-curve plot and a progress bar fed by the
trainer's per-step callback (:data:`atkit.training.trainer.StepCallback`); a Stop button
(:meth:`atkit.training.trainer.Trainer.request_stop`: the run ends after the current step and keeps what it
measured); a results table and a clean-vs-robust trade-off plot that grow with each run. Every
handler is a plain method, so the UI can be driven and tested without a front end.
:func:`interactive_mode` decides between this UI and the notebook's batch mode.

The engine's names (``AblationSession``, ``param_specs``, ``point_label``, ...) are re-exported here, and
``tradeoff_scatter`` from :mod:`atkit.workbench.plots`, for the imports that name this module.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from ..core.utils import ConfigError
from .ablation import (EVALUATIONS, POINT_KEYS, AblationSession, ParamSpec, describe_evaluation, evaluation_overrides,
                       method_choices, param_specs, parse_text_value, point_label, results_columns, split_point)

# Display sizes (CSS px). The figures keep their aspect ratio (height auto) and the rows align their items at the top
# (a flex row stretches its children to the tallest one, which drew the learning curves about 2x too tall).
CONTROLS_WIDTH = "380px"
LIVE_WIDTH = "700px"
TRADEOFF_WIDTH = "420px"
TABLE_MAX_HEIGHT = "340px"


def results_html(table: pd.DataFrame) -> str:
    """:func:`results_columns` of the session's table as HTML (blank where a run did not measure a column)."""
    if table.empty:
        return "<i>no runs yet</i>"
    html = table[results_columns(table)].to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="")
    return f'<div style="white-space: nowrap; font-size: 12px">{html}</div>'  # one line per run; the box scrolls




# ------------------------------------------------------------------------------------------- UI
def make_control(spec: ParamSpec):
    """An ipywidgets control for one hyperparameter, showing its help as tooltip and its range."""
    import ipywidgets as W  # why: ipywidgets is heavy and only the interactive mode needs it

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
        # Selected by index: a Dropdown given value=None selects nothing and shows a blank box.
        w = W.Dropdown(options=options, index=_choice_index(spec, spec.default), description=spec.name, style=style,
                       layout=layout)
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


def _choice_index(spec: ParamSpec, value: Any) -> int:
    for i, choice in enumerate(spec.choices):
        if choice is value or (choice == value and type(choice) is type(value)):
            return i
    raise ValueError(f"{spec.name}={value!r} is not one of its choices {spec.choices}")


def set_control(spec: ParamSpec, widget: Any, value: Any) -> None:
    """Show ``value`` in the control of ``spec`` (a choice by its index, so that None shows its label)."""
    if spec.kind == "choice":
        widget.index = _choice_index(spec, value)
    elif spec.kind == "text":
        widget.value = "" if value is None else str(value)
    else:
        widget.value = value


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
    ``method_params``: the first selection; ``live_plot``: redraw the learning curves after each epoch;
    ``evaluation``: the final evaluation first selected, ``"quick"`` (:data:`atkit.workbench.ablation.QUICK_EVALUATION`:
    clean and PGD-20 on 500 test images, no sanity checks) or ``"full"`` (the base config's), stated under the
    control; the table's ``evaluated`` column says what evaluated each run (a quick request keeps an evaluation that
    is there).
    """

    def __init__(self, session: AblationSession, *, methods: Optional[Sequence[str]] = None,
                 method: Optional[str] = None, method_params: Optional[Mapping[str, Any]] = None,
                 live_plot: bool = True, evaluation: str = "quick") -> None:
        import ipywidgets as W  # why: ipywidgets is heavy and only the interactive mode needs it

        self.session = session
        self.live_plot = live_plot
        self.thread: Optional[threading.Thread] = None
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
        evaluation_overrides(evaluation)  # refuse an unknown name before building anything
        self.evaluation = W.ToggleButtons(options=list(EVALUATIONS), value=evaluation, description="final evaluation",
                                          style={"description_width": "170px", "button_width": "80px"},
                                          tooltips=["quick: to compare while exploring", "full: the numbers to report"])
        self.evaluation_note = W.HTML(layout=W.Layout(width="360px"))
        self.evaluation.observe(lambda _change: self._note_evaluation(), names="value")
        self._note_evaluation()
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", bar_style="info")
        self.status = W.HTML(value="ready")
        # The figures enter their boxes with their first PNG: an empty Image widget is a broken-image icon.
        self.live = W.Image(format="png", layout=W.Layout(width=LIVE_WIDTH, height="auto"))
        self.live_box = W.Box([W.HTML("<i>learning curves: after the first epoch of a run</i>")],
                              layout=W.Layout(width=LIVE_WIDTH, flex="0 0 auto"))
        self.tradeoff_plot = W.Image(format="png", layout=W.Layout(width=TRADEOFF_WIDTH, height="auto"))
        self.tradeoff_box = W.Box([W.HTML("<i>clean vs robust accuracy: after the first run</i>")],
                                  layout=W.Layout(width=TRADEOFF_WIDTH, flex="0 0 auto"))
        # The table scrolls inside its box, beside the trade-off plot, instead of pushing the plot off screen.
        self.table = W.HTML(value=results_html(pd.DataFrame()))
        self.table_box = W.Box([self.table], layout=W.Layout(flex="1 1 auto", min_width="0", max_height=TABLE_MAX_HEIGHT,
                                                             overflow="auto"))
        self.log = W.Output()
        left = W.VBox([self.method, self.params_box, self.eps255, self.epochs, self.seed, self.evaluation,
                       self.evaluation_note, W.HBox([self.run_button, self.stop_button]), self.progress, self.status],
                      layout=W.Layout(width=CONTROLS_WIDTH, flex="0 0 auto"))
        top = W.HBox([left, self.live_box], layout=W.Layout(align_items="flex-start"))
        results = W.HBox([self.tradeoff_box, self.table_box], layout=W.Layout(align_items="flex-start"))
        self.widget = W.VBox([top, results, self.log])

    # -- controls ---------------------------------------------------------------------------------
    def _build_params(self, method: str, values: Optional[Mapping[str, Any]] = None) -> None:
        specs = param_specs(method)
        self.specs = {s.name: s for s in specs}
        self.controls = {}
        for spec in specs:
            w = make_control(spec)
            if values and spec.name in values:
                set_control(spec, w, values[spec.name])
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

    def _note_evaluation(self) -> None:
        config = self.session.config_for({}, self.evaluation.value)
        what = describe_evaluation(config.eval)
        if self.evaluation.value == "quick":
            self.evaluation_note.value = (f"<small><b>quick</b>: {what}. To compare points while exploring; "
                                          "choose <b>full</b> for the numbers to report.</small>")
        else:
            self.evaluation_note.value = f"<small><b>full</b> (the base config's): {what}.</small>"

    # -- run / stop -------------------------------------------------------------------------------
    def on_run(self, _button: Any = None) -> Optional[threading.Thread]:
        """Start the current point in a background thread (ignored while a run is going)."""
        if self.thread is not None and self.thread.is_alive():
            return None
        try:
            point = self.current_point()
            evaluation = self.evaluation.value
            config = self.session.config_for(point, evaluation)
        except ConfigError as e:
            self.status.value = f"<b style='color:#b00'>not started:</b> {e}"
            return None
        self.run_button.disabled = True
        self.stop_button.disabled = False
        self.progress.value = 0
        self.progress.max = max(1, config.resolved_epochs())
        self.progress.bar_style = "info"
        self.status.value = f"running {point_label(point)} ..."
        self.thread = threading.Thread(target=self._worker, args=(point, evaluation), name="atkit-ablation-run",
                                       daemon=True)
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

    def _worker(self, point: Mapping[str, Any], evaluation: str) -> None:
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
                                   on_status=show, evaluation=evaluation)
            self.progress.bar_style = {"finished": "success", "stopped": "warning"}.get(row.get("status"), "danger")
            msg = f"{row.get('status')}: {point_label(point)} ({row.get('seconds', 0):.1f} s)"
            if row.get("evaluated"):
                msg += f"; evaluated ({evaluation} asked): {row['evaluated']}"
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
        from ..core.figures import figure_png_bytes  # why: defers matplotlib/seaborn (heavy)
        from .plots import learning_curves_figure  # why: defers matplotlib/seaborn (heavy)

        try:
            self.live.value = figure_png_bytes(learning_curves_figure(list(history)), dpi=80)
            self.live_box.children = (self.live,)
        except Exception:  # noqa: BLE001 - a plotting problem must not stop training
            self.log.append_stderr(traceback.format_exc())

    def refresh_results(self) -> None:
        """Redraw the results table and the trade-off plot from the session's rows."""
        from ..core.figures import figure_png_bytes  # why: defers matplotlib/seaborn (heavy)
        from .plots import tradeoff_scatter  # why: defers matplotlib/seaborn (heavy)

        self.table.value = results_html(self.session.table())
        self.tradeoff_plot.value = figure_png_bytes(tradeoff_scatter(self.session.tradeoff()), dpi=80)
        self.tradeoff_box.children = (self.tradeoff_plot,)

    def display(self) -> None:
        from IPython.display import display  # why: IPython is only there in a notebook

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
        from IPython import get_ipython  # why: IPython is only there in a notebook kernel
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
        from IPython import get_ipython  # why: IPython is only there in a notebook kernel
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
           "results_html", "run_by_papermill", "set_control", "split_point", "POINT_KEYS"]


def __getattr__(name: str) -> Any:
    """``tradeoff_scatter`` (now in :mod:`atkit.workbench.plots`), imported on first use: plots imports seaborn (heavy)."""
    if name == "tradeoff_scatter":
        from .plots import tradeoff_scatter  # why: defers matplotlib/seaborn until a figure is asked for

        return tradeoff_scatter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


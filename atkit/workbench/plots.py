"""Seaborn figures in the form of the papers' figures. Each takes a tidy DataFrame and returns the Figure.

The figures are not attached to pyplot (``matplotlib.figure.Figure``), so a notebook shows each one exactly
once, where it calls :func:`show_figure`, and never again when the cell ends (the inline backend shows every
open pyplot figure, which is how figures used to appear twice), and they can be drawn from a thread.
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator

from ..core.figures import subplots as _subplots
from ..evaluation import display_name, strongest
from .results import SCORE_METRICS, column_name, history_frame


def _place_keys(ax: Any, xs: list, ys: list, min_px: float = 9.0) -> list[tuple[float, float]]:
    """Offsets (points) for the number beside each marker, picked so that no two numbers overlap."""
    ax.autoscale_view()
    placed: list[tuple[float, float]] = []
    offsets = []
    candidates = [(5, 4), (5, -11), (-13, 4), (-13, -11), (5, 12), (-13, 12), (5, -19), (-13, -19), (13, -3)]
    for x, y in zip(xs, ys):
        px, py = ax.transData.transform((x, y))
        choice = candidates[0]
        for dx, dy in candidates:
            cx, cy = px + dx * 1.4, py + dy * 1.4  # points to pixels at the figure's dpi (about 100)
            if all(abs(cx - qx) >= min_px or abs(cy - qy) >= min_px for qx, qy in placed):
                choice = (dx, dy)
                break
        placed.append((px + choice[0] * 1.4, py + choice[1] * 1.4))
        offsets.append(choice)
    return offsets


def tradeoff_figure(points: pd.DataFrame, title: Optional[str] = None, annotate: bool = True) -> Figure:
    """Clean vs robust accuracy, one panel per (threat model, robust attack), both named on the panel: ours as
    coloured stars with the seed spread, published entries grey (only those :func:`atkit.workbench.results.tradeoff_points`
    kept: same dataset, model family and threat model). Points carry their ``key`` number; a numbered legend
    beside each panel names them, so labels never print over each other."""
    sns.set_theme(style="whitegrid")
    panels = list(dict.fromkeys(zip(points["threat"], points["robust_metric"]))) if not points.empty else []
    fig, axes = _subplots(1, max(1, len(panels)), figsize=(6.8 * max(1, len(panels)), 5.0), squeeze=False)
    if not panels:
        ax = axes[0][0]
        ax.text(0.5, 0.5, "no runs with clean and robust accuracy yet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel("robust accuracy (%)")
    for ax, (threat, metric) in zip(axes[0], panels):
        sub = points[(points["robust_metric"] == metric) & (points["threat"] == threat)]
        published, ours = sub[sub["who"] == "published"], sub[sub["who"] == "this workbook"]
        if not published.empty:
            ax.scatter(published["clean"], published["robust"], s=30, color="0.55", marker="o", label="published")
        colors = sns.color_palette(n_colors=max(1, len(ours)))
        for color, rec in zip(colors, ours.to_dict(orient="records")):
            ax.errorbar(rec["clean"], rec["robust"], xerr=_float(rec.get("clean_std")),
                        yerr=_float(rec.get("robust_std")), fmt="*", ms=12, color=color, ecolor="0.4", lw=0.8)
        ordered = pd.concat([ours, published])
        lines = []
        if annotate and not ordered.empty:
            offsets = _place_keys(ax, list(ordered["clean"]), list(ordered["robust"]))
            for (dx, dy), rec in zip(offsets, ordered.to_dict(orient="records")):
                ax.annotate(str(rec["key"]), (rec["clean"], rec["robust"]), xytext=(dx, dy), textcoords="offset points",
                            fontsize=7, color="black" if rec["who"] != "published" else "0.35")
                where = "" if rec["who"] != "published" else f"  [{rec['source']}]"
                lines.append(f"{rec['key']:>3}  {rec['label']}{where}")
            ax.text(1.02, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=6,
                    family="monospace")
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel(f"robust accuracy (%) under {display_name(metric)}")
        ax.set_title(f"{threat}, {display_name(metric)}: {len(ours)} of ours (stars), {len(published)} "
                     "published (grey)", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if f != f else f


# =============================================================================================
# Runs: learning curves, ablations (RPAT, Fig. 4; RAAT, Fig. 5; DUCAT, Fig. 7), the ablation UI's scatter.
# =============================================================================================
def learning_curves_figure(history: Any, title: Optional[str] = None) -> Figure:
    """Two panels: the loss and its parts per epoch; training clean/adversarial and test clean/PGD accuracy
    per epoch (``history``: a run's ``metrics.json`` records, :func:`atkit.workbench.results.history_frame`)."""
    sns.set_theme(style="whitegrid")
    frame = history_frame(history)
    fig = Figure(figsize=(11, 4))
    for i, panel in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        data = frame[frame["panel"] == panel]
        if not data.empty:
            sns.lineplot(data=data, x="epoch", y="value", hue="series", marker="o", ax=ax)
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=ax.transAxes)
        _integer_epoch_axis(ax, sorted(set(data["epoch"].dropna())))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if panel == "loss" else "accuracy (%)")
        ax.set_title("training loss and its parts" if panel == "loss" else "accuracy per epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _integer_epoch_axis(ax: Any, epochs: list) -> None:
    """Epochs are whole numbers: a tick at each epoch when there are few (one epoch alone is centred in a range of
    +-1, not drawn over 0.96-1.04), else integer ticks only."""
    if not epochs:
        return
    if len(epochs) <= 12:
        ax.xaxis.set_major_locator(FixedLocator([float(e) for e in epochs]))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)


def ablation_figure(table: pd.DataFrame, x: str, *, hue: Optional[str] = None, checkpoint: str = "final",
                    title: Optional[str] = None) -> Figure:
    """Clean and robust accuracy against one ablated parameter (the form of RPAT, Fig. 4, RAAT,
    Fig. 5, DUCAT, Fig. 7): one panel per accuracy, points with the spread over seeds.

    ``table``: rows of :class:`atkit.workbench.ablation.AblationSession` (``<checkpoint>_clean`` and robust columns);
    ``x``: the column with the parameter's values (shown as categories, in table order)."""
    sns.set_theme(style="whitegrid")
    prefix = f"{checkpoint}_"
    names = [c[len(prefix):] for c in table.columns if c.startswith(prefix)
             and pd.api.types.is_numeric_dtype(table[c]) and c[len(prefix):] not in SCORE_METRICS]
    panels = ["clean"] + [m for m in (strongest(names),) if m]
    fig = Figure(figsize=(5 * len(panels), 3.8))
    data = table.copy()
    data[x] = data[x].astype(str)
    for i, metric in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        col = f"{prefix}{metric}"
        if col in data and data[col].notna().any():
            sns.pointplot(data=data, x=x, y=col, hue=hue, errorbar="sd", ax=ax, capsize=0.1,
                          order=list(dict.fromkeys(data[x])))
        ax.set_ylabel(f"{column_name(metric)} accuracy (%), {checkpoint}")
        ax.set_xlabel(x)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tradeoff_scatter(points: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Clean vs robust accuracy of an ablation session's runs so far
    (:meth:`atkit.workbench.ablation.AblationSession.tradeoff`)."""
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


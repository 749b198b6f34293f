"""Seaborn figures in the form of the papers' figures. Each takes a tidy DataFrame and returns the Figure.

The figures are not attached to pyplot (``matplotlib.figure.Figure``), so a notebook shows each one exactly
once, where it calls :func:`show_figure`, and never again when the cell ends (the inline backend shows every
open pyplot figure, which is how figures used to appear twice), and they can be drawn from a thread.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.artist import setp
from matplotlib.figure import Figure

from .evaluation import display_name, strongest
from .results import SCORE_METRICS, column_name, history_frame
from .utils import atomic_write_bytes


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a new Figure and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig`` (pyplot's or not)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def show_figure(fig: Figure, dpi: int = 110) -> None:
    """Show ``fig`` once in the notebook as a PNG (outside IPython: nothing). A pyplot figure is closed
    afterwards, so that the inline backend does not show it a second time when the cell ends."""
    try:
        from IPython import get_ipython  # why: IPython is only there in a notebook kernel
        from IPython.display import Image, display
    except ImportError:  # a plain Python without IPython: nothing to show on
        return
    if get_ipython() is not None:
        display(Image(data=figure_png_bytes(fig, dpi=dpi), format="png"))
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt  # why: only pyplot's own figures have a manager; others never load pyplot

        plt.close(fig)


def perception_mse_figure(summary: pd.DataFrame, title: Optional[str] = None,
                          log_scale: Optional[bool] = None) -> Figure:
    """RPAT, Fig. 2: bars of mean logit MSE for success / failure cases per (training, perturbation)
    pair, and lines of clean and perturbed accuracy on a second axis.

    ``summary`` has one row per pair with columns ``pair``, ``mse_success``, ``mse_failure``,
    ``clean_acc``, ``perturbed_acc``. ``log_scale=None`` puts the MSE axis on a log scale when the
    bars span more than 30x (random noise moves logits orders of magnitude less than an attack, and
    its bars would vanish on a linear axis).
    """
    sns.set_theme(style="whitegrid")
    bars = summary.melt(id_vars="pair", value_vars=["mse_success", "mse_failure"], var_name="case", value_name="MSE")
    bars["case"] = bars["case"].map({"mse_success": "success", "mse_failure": "failure"})
    fig, ax = _subplots(figsize=(7, 4.2))
    sns.barplot(data=bars, x="pair", y="MSE", hue="case", palette={"success": "#4c72b0", "failure": "#dd8452"}, ax=ax)
    values = bars["MSE"].dropna()
    values = values[values > 0]
    if log_scale is None:
        log_scale = len(values) > 1 and float(values.max()) > 30 * float(values.min())
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("training algorithm / perturbation method")
    ax.set_ylabel("MSE on logits (benign vs perturbed)" + (", log scale" if log_scale else ""))
    ax2 = ax.twinx()
    ax2.grid(False)
    xs = range(len(summary))
    ax2.plot(xs, summary["clean_acc"], "o-", color="#55a868", label="clean accuracy")
    ax2.plot(xs, summary["perturbed_acc"], "s--", color="#c44e52", label="perturbed accuracy")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("accuracy (%)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # Below the axes: inside, the legend hides bars or accuracy markers whatever corner it takes.
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save as PNG (atomically: a temporary file renamed over the target)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


# =============================================================================================
# Boundary samples (RAAT, Fig. 2, 5b) and always-failed overlap (DUCAT, Fig. 2, 3, 4, 8).
# =============================================================================================
def _metric_long(df: pd.DataFrame, id_vars: list, metric_cols: dict) -> pd.DataFrame:
    """Wide accuracy columns -> long rows with a readable ``metric`` name."""
    long = df.melt(id_vars=id_vars, value_vars=list(metric_cols), var_name="metric", value_name="accuracy")
    long["metric"] = long["metric"].map(metric_cols)
    return long


def boundary_fraction_figure(history: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """RAAT, Fig. 2 (partition over training): boundary fraction per epoch, one line per variant.

    ``history``: columns ``epoch``, ``variant``, ``train_boundary_frac`` (of all samples) and
    ``train_boundary_frac_of_correct`` (of clean-correct samples).
    """
    sns.set_theme(style="whitegrid")
    fig, axes = _subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, col, label in ((axes[0], "train_boundary_frac", "boundary share of all samples"),
                           (axes[1], "train_boundary_frac_of_correct", "boundary share of clean-correct")):
        sns.lineplot(data=history, x="epoch", y=col, hue="variant", marker="o", ax=ax)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(0.05, float(history[col].max()) * 1.15) if len(history) else 1)
        ax.legend(fontsize=7, title="variant", title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def boundary_partition_figure(partition: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """Stacked bars per ``eta``: shares of misclassified, boundary and non-boundary samples
    (``partition`` from :func:`atkit.analysis.boundary_partition`)."""
    sns.set_theme(style="whitegrid")
    fig, ax = _subplots(figsize=(6.5, 3.8))
    labels = [f"{e:g}" for e in partition["eta"]]
    bottom = pd.Series([0.0] * len(partition))
    for col, name, color in (("n_misclassified", "misclassified", "#c44e52"), ("n_boundary", "boundary", "#dd8452"),
                             ("n_nonboundary", "non-boundary", "#4c72b0")):
        share = partition[col].reset_index(drop=True) / partition["n"].reset_index(drop=True)
        ax.bar(labels, share, bottom=bottom, label=name, color=color)
        bottom = bottom + share
    ax.set_xlabel("eta (reduction factor of the perturbation)")
    ax.set_ylabel("share of training samples")
    ax.set_ylim(0, 1.1)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    for x, share in zip(labels, partition["boundary_frac"]):  # the boundary share, too thin to read off a bar
        ax.text(x, 1.02, f"{100 * share:.1f}%", ha="center", va="bottom", fontsize=7, color="#dd8452")
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def budget_sweep_figure(results: pd.DataFrame, metric_cols: dict, title: Optional[str] = None) -> Figure:
    """RAAT, Fig. 2 form: accuracy against the budget scale of one group, the other at full eps.

    ``results``: one row per trained variant with ``boundary_scale``, ``nonboundary_scale`` and the
    accuracy columns named in ``metric_cols`` (column -> legend label, e.g. ``{"clean": "clean"}``).
    Left panel: boundary budget varied (non-boundary at 1); right: non-boundary budget varied.
    """
    sns.set_theme(style="whitegrid")
    fig, axes = _subplots(1, 2, figsize=(10, 3.8), sharey=True)
    panels = (("boundary_scale", "nonboundary_scale", "boundary samples' budget (x eps)"),
              ("nonboundary_scale", "boundary_scale", "non-boundary samples' budget (x eps)"))
    for ax, (varied, fixed, xlabel) in zip(axes, panels):
        sub = results[results[fixed] == 1.0]
        long = _metric_long(sub, [varied], metric_cols)
        if len(long):
            sns.lineplot(data=long, x=varied, y="accuracy", hue="metric", marker="o", ax=ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        if ax.get_legend() is not None:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def budget_grid_figure(results: pd.DataFrame, metric_cols: dict, title: Optional[str] = None) -> Figure:
    """Heatmaps of each accuracy over the full (boundary budget, non-boundary budget) grid."""
    sns.set_theme(style="white")
    fig, axes = _subplots(1, len(metric_cols), figsize=(4.2 * len(metric_cols), 3.8), squeeze=False)
    for ax, (col, label) in zip(axes[0], metric_cols.items()):
        grid = results.pivot_table(index="boundary_scale", columns="nonboundary_scale", values=col, aggfunc="mean")
        sns.heatmap(grid.sort_index(ascending=False), annot=True, fmt=".1f", cmap="viridis", ax=ax,
                    cbar_kws={"label": f"{label} accuracy (%)"})
        ax.set_xlabel("non-boundary budget (x eps)")
        ax.set_ylabel("boundary budget (x eps)")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def eta_sweep_figure(results: pd.DataFrame, metric_cols: dict, title: Optional[str] = None,
                     reference: Optional[dict] = None, reference_label: str = "PGD-AT") -> Figure:
    """RAAT, Fig. 5b form: accuracy against eta, one line per metric (``results`` has ``eta``).

    ``reference`` (accuracy column -> value) draws each metric of a reference model as a dashed
    horizontal line in the metric's colour.
    """
    sns.set_theme(style="whitegrid")
    fig, ax = _subplots(figsize=(6.5, 3.8))
    long = _metric_long(results, ["eta"], metric_cols)
    colors = dict(zip(metric_cols.values(), sns.color_palette(n_colors=len(metric_cols))))
    sns.lineplot(data=long, x="eta", y="accuracy", hue="metric", marker="o", ax=ax, palette=colors)
    for col, value in (reference or {}).items():
        label = metric_cols[col]
        ax.axhline(value, ls="--", lw=1, color=colors[label], label=f"{label} ({reference_label})")
    ax.set_xlabel("eta (boundary partition)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def overlap_bars_figure(by_class: pd.DataFrame, num_models: int, title: Optional[str] = None) -> Figure:
    """DUCAT, Fig. 2: per class, stacked counts of test samples whose PGD example defeats 0..M models.

    ``by_class``: columns ``class_name``, ``defeated``, ``count`` (:meth:`CrossAttack.overlap_by_class`).
    """
    sns.set_theme(style="whitegrid")
    fig, ax = _subplots(figsize=(9, 4))
    table = by_class.pivot_table(index="class_name", columns="defeated", values="count", aggfunc="sum", sort=False)
    colors = sns.color_palette("RdYlGn_r", num_models + 1)
    bottom = None
    for k in range(num_models + 1):
        values = table[k] if k in table.columns else 0 * table.iloc[:, 0]
        label = "defended by all" if k == 0 else "defeats all" if k == num_models else f"defeats {k}"
        ax.bar(table.index.astype(str), values, bottom=bottom, color=colors[k], label=label)
        bottom = values if bottom is None else bottom + values
    ax.set_xlabel("class")
    ax.set_ylabel("number of test samples")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="PGD example", title_fontsize=8)
    setp(ax.get_xticklabels(), rotation=30, ha="right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def transfer_figure(table: pd.DataFrame, title: Optional[str] = None) -> Figure:
    """DUCAT, Fig. 3: % of each target fooled by examples made on each surrogate, for examples that
    succeeded on the surrogate (left) and those that failed (right). ``table`` from
    :meth:`CrossAttack.transfer_table`."""
    sns.set_theme(style="white")
    order = list(dict.fromkeys(table["surrogate"]))
    fig, axes = _subplots(1, 2, figsize=(10.5, 4.2))
    for ax, subset in zip(axes, ("success", "failure")):
        mat = table[table["subset"] == subset].pivot(index="surrogate", columns="target", values="fooled_pct")
        mat = mat.reindex(index=order, columns=order)
        # One colour bar (same 0-100 scale) on the right: a bar between the panels collides with the
        # right panel's row labels.
        last = subset == "failure"
        sns.heatmap(mat, annot=True, fmt=".0f", vmin=0, vmax=100, cmap="rocket_r", ax=ax, cbar=last,
                    cbar_kws={"label": "% of target fooled"} if last else None)
        sizes = table[(table["subset"] == subset)].drop_duplicates("surrogate").set_index("surrogate")["n"]
        ax.set_yticklabels([f"{s} (n={int(sizes.get(s, 0))})" for s in order], rotation=0)
        ax.set_title(f"examples that {'fooled' if subset == 'success' else 'did not fool'} the surrogate")
        ax.set_xlabel("target model")
        ax.set_ylabel("surrogate model")
        ax.tick_params(axis="x", labelrotation=90)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrices_figure(matrices: dict, class_names: list, title: Optional[str] = None) -> Figure:
    """DUCAT, Fig. 8: one row-normalised confusion matrix (percent of each true class) per model."""

    sns.set_theme(style="white")
    m = len(matrices)
    ncols = 2 if m == 4 else min(m, 3)
    nrows = -(-m // ncols)
    fig, axes = _subplots(nrows, ncols, figsize=(4.6 * ncols, 4.3 * nrows), squeeze=False)
    for ax in axes.flat[m:]:
        ax.set_visible(False)
    for ax, (name, mat) in zip(axes.flat, matrices.items()):
        counts = np.asarray(mat, dtype=float)
        pct = 100.0 * counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
        sns.heatmap(pd.DataFrame(pct, index=class_names, columns=class_names), vmin=0, vmax=100, cmap="Blues",
                    annot=len(class_names) <= 10, fmt=".0f", annot_kws={"fontsize": 6}, cbar=False, ax=ax)
        ax.set_title(name)
        ax.set_xlabel("predicted under PGD")
        ax.set_ylabel("true class")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def toy_case_figure(results: pd.DataFrame, metric_cols: dict, title: Optional[str] = None) -> Figure:
    """DUCAT, Fig. 4: grouped bars of clean / PGD-10 / AutoAttack accuracy per model.

    ``results``: one row per model with a ``model`` column and the accuracy columns of ``metric_cols``.
    """
    sns.set_theme(style="whitegrid")
    long = _metric_long(results, ["model"], metric_cols)
    fig, ax = _subplots(figsize=(max(6.5, 1.9 * len(results)), 4))
    sns.barplot(data=long, x="model", y="accuracy", hue="metric", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_xlabel("")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    setp(ax.get_xticklabels(), rotation=15, ha="right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# =============================================================================================
# Trade-off scatter of the results notebook (form of DUCAT, Fig. 5).
# =============================================================================================


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
    coloured stars with the seed spread, published entries grey (only those :func:`atkit.results.tradeoff_points`
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
    per epoch (``history``: a run's ``metrics.json`` records, :func:`atkit.results.history_frame`)."""
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
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if panel == "loss" else "accuracy (%)")
        ax.set_title("training loss and its parts" if panel == "loss" else "accuracy per epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ablation_figure(table: pd.DataFrame, x: str, *, hue: Optional[str] = None, checkpoint: str = "final",
                    title: Optional[str] = None) -> Figure:
    """Clean and robust accuracy against one ablated parameter (the form of RPAT, Fig. 4, RAAT,
    Fig. 5, DUCAT, Fig. 7): one panel per accuracy, points with the spread over seeds.

    ``table``: rows of :class:`atkit.ablation.AblationSession` (``<checkpoint>_clean`` and robust columns);
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
    (:meth:`atkit.ablation.AblationSession.tradeoff`)."""
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


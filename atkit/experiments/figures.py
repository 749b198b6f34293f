"""The motivation experiments' figures, in the form of the papers' figures (RPAT, Fig. 2; RAAT, Fig. 2 and 5b;
DUCAT, Fig. 2, 3, 4 and 8). Each takes a tidy DataFrame and returns a ``matplotlib.figure.Figure`` (not attached
to pyplot: :mod:`atkit.core.figures`)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.artist import setp
from matplotlib.figure import Figure

from ..core.figures import subplots as _subplots


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
    (``partition`` from :func:`atkit.experiments.measures.boundary_partition`)."""
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

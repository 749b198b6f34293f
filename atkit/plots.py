"""Seaborn figures in the form of the papers' figures. Each takes a tidy DataFrame and returns the Figure."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def perception_mse_figure(summary: pd.DataFrame, title: Optional[str] = None) -> plt.Figure:
    """Seed 002 Fig. 2: bars of mean logit MSE for success / failure cases per (training, perturbation)
    pair, and lines of clean and perturbed accuracy on a second axis.

    ``summary`` has one row per pair with columns ``pair``, ``mse_success``, ``mse_failure``,
    ``clean_acc``, ``perturbed_acc``.
    """
    sns.set_theme(style="whitegrid")
    bars = summary.melt(id_vars="pair", value_vars=["mse_success", "mse_failure"], var_name="case", value_name="MSE")
    bars["case"] = bars["case"].map({"mse_success": "success", "mse_failure": "failure"})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.barplot(data=bars, x="pair", y="MSE", hue="case", palette={"success": "#4c72b0", "failure": "#dd8452"}, ax=ax)
    ax.set_xlabel("training algorithm / perturbation method")
    ax.set_ylabel("MSE on logits (benign vs perturbed)")
    ax2 = ax.twinx()
    ax2.grid(False)
    xs = range(len(summary))
    ax2.plot(xs, summary["clean_acc"], "o-", color="#55a868", label="clean accuracy")
    ax2.plot(xs, summary["perturbed_acc"], "s--", color="#c44e52", label="perturbed accuracy")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("accuracy (%)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8, frameon=True)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save as PNG (atomically: a temporary file renamed over the target)."""
    import io

    from .utils import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path

"""Figures without pyplot: a new Figure, its PNG bytes, saving it atomically, showing it once in a notebook.

Figures are ``matplotlib.figure.Figure`` objects not attached to pyplot, so a notebook shows each one exactly once,
where it calls :func:`show_figure` (the inline backend shows every open pyplot figure again when a cell ends),
and they can be drawn from a thread. Core: imports matplotlib (heavy) and :mod:`atkit.core.utils` only.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .utils import atomic_write_bytes


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
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


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save as PNG (atomically: a temporary file renamed over the target)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = ["figure_png_bytes", "save_figure", "show_figure", "subplots"]

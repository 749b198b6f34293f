"""What a run configuration resolves to before training: a fresh run folder, and the data, model and method
(:func:`prepare`, shared by the trainer and the notebooks that train)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ..core.paths import resolve_output_path
from ..core.utils import ConfigError
from ..data import load_dataset, split_validation, to_float_images
from ..methods import Method
from ..models import build_model
from .config import RunConfig


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create and return a fresh folder ``out_dir/name`` (``name-2``, ``name-3``... if taken).

    ``mkdir`` without ``exist_ok`` is atomic, so two runs started at the same time never share a folder.
    A relative ``out_dir`` is read against the project root, not the working directory (:mod:`atkit.core.paths`).
    """
    out_dir = resolve_output_path(out_dir)
    for i in range(1, 100000):
        path = out_dir / (name if i == 1 else f"{name}-{i}")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:  # read-only or full disk: refuse before any work starts
            raise ConfigError(f"cannot create a run folder in out_dir {str(out_dir)!r}: {e.strerror or e} "
                              "(choose a writable out_dir / --out-dir)") from e
    raise RuntimeError(f"could not create a run folder for {name!r} in {out_dir}")


@dataclass
class Prepared:
    """The data, model and method a config resolves to (built once, shared by trainer and notebooks)."""

    dataset: Any
    model: nn.Module
    method: Method
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    data_fingerprint: str  # of the whole dataset as loaded, before any validation split
    eval_indices: Optional[torch.Tensor] = None  # which images of the selection split eval_x holds


def prepare(config: RunConfig, device: torch.device) -> Prepared:
    """Load the dataset, build the model (dummy head when the method needs it) and the method."""
    method = config.build_method()
    dataset = load_dataset(config.dataset, **config.data)
    fingerprint = dataset.fingerprint()
    if config.val_size > 0:
        dataset = split_validation(dataset, n_val=config.val_size, seed=config.seed)
        split = "val"
    else:
        split = "test"
    # Per-epoch selection images: class-stratified and the same for every seed (never "the first n").
    n_split = len(dataset.val_y if split == "val" else dataset.test_y)
    n_select = min(config.eval.n_test, n_split) if config.eval.n_test else None
    eval_x, eval_y, eval_idx = dataset.eval_subset(n_select, split=split)
    model_params = dict(config.model_params)
    if method.needs_dummy_classes:
        model_params["dummy_classes"] = True
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=dataset.num_classes, **model_params).to(device)
    return Prepared(dataset, model, method, to_float_images(eval_x), eval_y, fingerprint, eval_idx)


__all__ = ["Prepared", "new_run_dir", "prepare"]

"""Measurements behind the motivation experiments (REFERENCE.md section 4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .models import predict_labels


@dataclass
class PerceptionMSE:
    """Per-sample logit MSE between clean and perturbed inputs, split by the perturbed prediction."""

    mse: Tensor            # (N,) mean over classes of (z(x) - z(x_hat))^2
    clean_correct: Tensor  # (N,) bool
    perturbed_correct: Tensor  # (N,) bool

    def summary(self) -> dict[str, float]:
        ok, bad = self.perturbed_correct, ~self.perturbed_correct
        nan = float("nan")
        return {
            "mse_success": float(self.mse[ok].mean()) if ok.any() else nan,
            "mse_failure": float(self.mse[bad].mean()) if bad.any() else nan,
            "n_success": int(ok.sum()),
            "n_failure": int(bad.sum()),
            "clean_acc": 100.0 * float(self.clean_correct.float().mean()),
            "perturbed_acc": 100.0 * float(self.perturbed_correct.float().mean()),
        }


def perception_mse(model: nn.Module, x: Tensor, y: Tensor, perturb: Callable[[nn.Module, Tensor, Tensor], Tensor],
                   *, batch_size: int = 500, num_classes: Optional[int] = None,
                   device: Optional[torch.device] = None) -> PerceptionMSE:
    """Logit MSE ``mean_k (z_k(x) - z_k(x_hat))^2`` for each test sample (seed 002 Sec. 3, Fig. 2).

    ``perturb(model, x, y)`` returns ``x_hat`` (uniform noise, or a PGD-20 attack). Samples are
    "success" when ``x_hat`` is still classified correctly and "failure" otherwise.
    """
    device = device or next(model.parameters()).device
    num_classes = num_classes or getattr(model, "num_classes", None)
    was_training = model.training
    model.eval()
    mses, clean_ok, pert_ok = [], [], []
    try:
        for i in range(0, len(y), batch_size):
            xb = x[i:i + batch_size].to(device)
            yb = y[i:i + batch_size].to(device)
            if xb.dtype == torch.uint8:
                xb = xb.float() / 255
            x_hat = perturb(model, xb, yb)
            with torch.no_grad():
                z, z_hat = model(xb).float(), model(x_hat).float()
            c = num_classes or z.shape[1]
            mses.append((z - z_hat).pow(2).mean(dim=1).cpu())
            clean_ok.append((predict_labels(z, c) == yb).cpu())
            pert_ok.append((predict_labels(z_hat, c) == yb).cpu())
    finally:
        model.train(was_training)
    return PerceptionMSE(torch.cat(mses), torch.cat(clean_ok), torch.cat(pert_ok))

"""Measurements behind the motivation experiments (docs/experiments.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..attacks import eval_logits
from ..core.utils import model_device
from ..models import predict_labels


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
    """Logit MSE ``mean_k (z_k(x) - z_k(x_hat))^2`` for each test sample (RPAT, Sec. 3, Fig. 2).

    ``perturb(model, x, y)`` returns ``x_hat`` (uniform noise, or a PGD-20 attack). Samples are
    "success" when ``x_hat`` is still classified correctly and "failure" otherwise.
    """
    device = device or model_device(model)
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


# =============================================================================================
# Boundary samples (RAAT, Fig. 2, 5b; docs/experiments.md, boundary_samples) and always-failed overlap
# (DUCAT, Fig. 2, 3, 4, 8; docs/experiments.md, always_failed_overlap).
# =============================================================================================
def _eval_predict(model: nn.Module, x: Tensor, num_classes: int) -> Tensor:
    """Projected prediction (:func:`atkit.models.predict_labels`) in eval mode, no gradient."""
    return predict_labels(eval_logits(model, x), num_classes)


def _num_classes_of(model: nn.Module, num_classes: Optional[int]) -> int:
    if num_classes is not None:
        return int(num_classes)
    found = getattr(model, "num_classes", None)
    if found is None:
        from ..core.utils import ConfigError

        raise ConfigError("pass num_classes=... (the model has no num_classes attribute)")
    return int(found)


def autoattack_spec(attacks: Optional[str | Sequence[str]] = None, n_iter: Optional[int] = None,
                    n_restarts: Optional[int] = None) -> dict:
    """The evaluation attack an experiment's AutoAttack settings name: ``None``/``"standard"`` -> ``aa`` (with
    any budget override), ``"apgd"`` -> ``apgd`` (APGD-CE + APGD-DLR), a list of AutoAttack attack names ->
    ``aa`` with that custom list (:mod:`atkit.evaluation.attacks.aa`)."""
    from ..core.utils import unknown_name_error

    if attacks == "apgd":
        spec: dict = {"name": "apgd", "n_iter": n_iter}
        if n_restarts is not None:
            spec["n_restarts"] = n_restarts
        return spec
    if isinstance(attacks, str) and attacks != "standard":
        raise unknown_name_error("AutoAttack setting", attacks, ("standard", "apgd", "<list of attacks>"))
    return {"name": "aa", "attacks": None if attacks in (None, "standard") else list(attacks), "n_iter": n_iter,
            "n_restarts": n_restarts}


def robust_correct(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, norm: str = "linf",
                   pgd_steps: int = 20, aa: bool = True, aa_attacks: Optional[str | Sequence[str]] = None,
                   aa_n_iter: Optional[int] = None, aa_n_restarts: Optional[int] = None,
                   protocol: Optional[str] = None, batch_size: int = 500, num_classes: Optional[int] = None,
                   seed: int = 0) -> dict[str, Tensor]:
    """Per-image correctness ``{"clean", "pgd<k>", "aa": bool (N,)}`` of an experiment's model, from one call of
    :func:`atkit.evaluation.evaluate` (the AutoAttack entry from :func:`autoattack_spec`, labelled ``aa``). A
    dummy-class model is evaluated under ``protocol`` (default: the published one)."""
    from ..evaluation import evaluate, parse_attack  # why: evaluation pulls scipy; experiments load it on use

    names: list = ["clean"] + ([f"pgd{pgd_steps}"] if pgd_steps > 0 else [])
    aa_label = None
    if aa:
        spec = autoattack_spec(aa_attacks, aa_n_iter, aa_n_restarts)
        aa_label = parse_attack(spec).label()
        names.append(spec)
    dummy = getattr(model, "dummy_classes", False)
    res = evaluate(model, x, y, attacks=names, threat={"norm": norm, "eps": eps, "step_size": step_size},
                   batch_size=batch_size, num_classes=_num_classes_of(model, num_classes), seed=seed,
                   protocol=(protocol or "published") if dummy else None)
    out = dict(res.per_sample)
    if aa_label is not None:
        out["aa"] = out.pop(aa_label)
    return out


def boundary_partition(model: nn.Module, x: Tensor, y: Tensor, *, etas: Sequence[float], eps: float,
                       step_size: float, steps: int = 10, norm: str = "linf", eta_mode: str = "scale",
                       batch_size: int = 500, num_classes: Optional[int] = None, seed: int = 0):
    """Partition of samples into misclassified / boundary / non-boundary for each ``eta`` (RAAT, Eq. 8-9).

    ``x'`` is PGD-``steps`` on the CE loss (uniform start, BatchNorm in eval mode); the reduced
    sample is ``x'' = x + eta (x' - x)`` (``eta_mode="scale"``, released RAAT code) or PGD in the
    ``eta * eps`` ball (``"ball"``, paper eq. 8). A boundary sample is clean-correct with ``x'`` and
    ``x''`` misclassified (:func:`atkit.methods.raat.boundary_mask`). Returns a DataFrame with one
    row per eta: ``eta, n, n_misclassified, n_boundary, n_nonboundary, boundary_frac`` (of all),
    ``boundary_frac_of_correct``.
    """
    import pandas as pd

    from ..attacks import pgd
    from ..core.utils import check_choice
    from ..methods.raat import boundary_mask, reduced_adversarial

    check_choice("eta_mode", eta_mode, ("scale", "ball"))
    num_classes = _num_classes_of(model, num_classes)
    dev = model_device(model)
    counts = {float(eta): [0, 0, 0] for eta in etas}  # misclassified, boundary, nonboundary
    n = 0
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(dev)
            xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
            yb = y[start:start + batch_size].to(dev).long()
            x_adv = pgd(model, xb, yb, eps=eps, step_size=step_size, steps=steps, norm=norm, loss="ce",
                        random_start="uniform", bn_mode="eval")
            logits_clean, logits_adv = eval_logits(model, xb), eval_logits(model, x_adv)
            correct = predict_labels(logits_clean, num_classes) == yb
            for eta in counts:
                if eta_mode == "scale":
                    x_red = reduced_adversarial(xb, x_adv, eta)
                else:
                    x_red = pgd(model, xb, yb, eps=eta * eps, step_size=eta * step_size, steps=steps, norm=norm,
                                loss="ce", random_start="uniform", bn_mode="eval")
                boundary = boundary_mask(logits_clean, logits_adv, eval_logits(model, x_red), yb, num_classes)
                counts[eta][0] += int((~correct).sum())
                counts[eta][1] += int(boundary.sum())
                counts[eta][2] += int((correct & ~boundary).sum())
            n += len(yb)
    rows = []
    for eta, (mis, bnd, non) in counts.items():
        rows.append({"eta": eta, "n": n, "n_misclassified": mis, "n_boundary": bnd, "n_nonboundary": non,
                     "boundary_frac": bnd / n if n else float("nan"),
                     "boundary_frac_of_correct": bnd / (bnd + non) if bnd + non else float("nan")})
    return pd.DataFrame(rows)


def confusion_matrix(pred: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Counts ``(C, C)``: row = true class, column = predicted class."""
    idx = y.detach().cpu().long() * num_classes + pred.detach().cpu().long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class CrossAttack:
    """Predictions of M models on PGD examples made against each of them (DUCAT, Sec. 2.1).

    ``adv_pred[s, t, i]``: label model ``t`` predicts for sample ``i``'s adversarial example made
    on surrogate ``s`` (``s == t``: the white-box attack). ``clean_pred[m, i]``: clean prediction.
    """

    names: list
    y: Tensor           # (N,)
    clean_pred: Tensor  # (M, N)
    adv_pred: Tensor    # (M, M, N)
    num_classes: int

    def white_box_correct(self) -> Tensor:
        """``(M, N)`` bool: model ``m`` still classifies the example made against it correctly."""
        idx = torch.arange(len(self.names))
        return self.adv_pred[idx, idx] == self.y

    def defeat_counts(self) -> Tensor:
        """``(N,)``: for each sample, how many of the M models its white-box adversarial example defeats."""
        return (~self.white_box_correct()).sum(dim=0)

    def overlap_by_class(self, class_names: Optional[Sequence[str]] = None):
        """DUCAT, Fig. 2: DataFrame ``class, class_name, defeated (0..M), count`` (every pair present)."""
        import pandas as pd

        counts = self.defeat_counts()
        m = len(self.names)
        rows = []
        for c in range(self.num_classes):
            in_class = self.y == c
            for k in range(m + 1):
                rows.append({"class": c, "class_name": class_names[c] if class_names else str(c), "defeated": k,
                             "count": int((in_class & (counts == k)).sum())})
        return pd.DataFrame(rows)

    def overlap_summary(self) -> dict:
        """Shares (in [0, 1]) of samples defended by all models, by none, and their sum (paper: > 0.8)."""
        counts = self.defeat_counts()
        n, m = len(counts), len(self.names)
        all_def = int((counts == 0).sum())
        none_def = int((counts == m).sum())
        return {"n": n, "num_models": m, "count_by_defeated": [int((counts == k).sum()) for k in range(m + 1)],
                "share_defended_by_all": all_def / n, "share_defended_by_none": none_def / n,
                "share_all_or_none": (all_def + none_def) / n}

    def transfer_table(self):
        """DUCAT, Fig. 3: examples made on each surrogate, split by success on it, scored on every model.

        DataFrame ``surrogate, target, subset ("success" | "failure"), n, fooled, fooled_pct`` where
        ``fooled_pct`` is the percentage of the subset the target misclassifies (diagonal: 100 / 0
        by construction).
        """
        import pandas as pd

        rows = []
        for s, sname in enumerate(self.names):
            success = self.adv_pred[s, s] != self.y
            for subset, mask in (("success", success), ("failure", ~success)):
                k = int(mask.sum())
                for t, tname in enumerate(self.names):
                    fooled = int((self.adv_pred[s, t][mask] != self.y[mask]).sum())
                    rows.append({"surrogate": sname, "target": tname, "subset": subset, "n": k, "fooled": fooled,
                                 "fooled_pct": 100.0 * fooled / k if k else float("nan")})
        return pd.DataFrame(rows)

    def confusion(self, m: int) -> Tensor:
        """DUCAT, Fig. 8: confusion matrix ``(C, C)`` of model ``m`` under its white-box attack."""
        return confusion_matrix(self.adv_pred[m, m], self.y, self.num_classes)

    def white_box_predictions(self) -> dict[str, list[int]]:
        """Each model's per-image prediction on its own (white-box) PGD example: what DUCAT, Fig. 8's confusion
        matrices are made of, kept per image so that they can be recomputed on resampled images."""
        return {name: self.adv_pred[i, i].tolist() for i, name in enumerate(self.names)}

    def accuracies(self) -> dict[str, dict[str, float]]:
        """``{name: {"clean_acc", "white_box_acc"}}`` in percent."""
        white = self.white_box_correct()
        n = len(self.y)
        return {name: {"clean_acc": 100.0 * int((self.clean_pred[i] == self.y).sum()) / n,
                       "white_box_acc": 100.0 * int(white[i].sum()) / n} for i, name in enumerate(self.names)}


def cross_attack(models: dict[str, nn.Module], x: Tensor, y: Tensor, *, eps: float, step_size: float,
                 steps: int = 10, norm: str = "linf", batch_size: int = 500, num_classes: Optional[int] = None,
                 seed: int = 0) -> CrossAttack:
    """Run PGD-``steps`` (CE, uniform start, BatchNorm eval) against every model and let every model
    classify every attack's examples: the white-box overlap (DUCAT, Fig. 2, 8) and the transfer
    matrix (Fig. 3) from one pass. Predictions are projected (dummy-class heads allowed)."""
    from ..attacks import pgd

    names = list(models)
    first = models[names[0]]
    num_classes = _num_classes_of(first, num_classes)
    dev = model_device(first)
    y_cpu = y.detach().cpu().long()
    n, m = len(y_cpu), len(names)
    clean_pred = torch.empty(m, n, dtype=torch.long)
    adv_pred = torch.empty(m, m, n, dtype=torch.long)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(dev)
            xb = xb.float() / 255 if xb.dtype == torch.uint8 else xb.float()
            yb = y_cpu[start:start + batch_size].to(dev)
            sl = slice(start, start + len(yb))
            for t, tname in enumerate(names):
                clean_pred[t, sl] = _eval_predict(models[tname], xb, num_classes).cpu()
            for s, sname in enumerate(names):
                x_adv = pgd(models[sname], xb, yb, eps=eps, step_size=step_size, steps=steps, norm=norm, loss="ce",
                            random_start="uniform", bn_mode="eval")
                for t, tname in enumerate(names):
                    adv_pred[s, t, sl] = _eval_predict(models[tname], x_adv, num_classes).cpu()
    return CrossAttack(names, y_cpu, clean_pred, adv_pred, num_classes)

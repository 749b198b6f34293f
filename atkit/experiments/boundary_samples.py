"""Boundary samples and their perturbation budgets (RAAT, Fig. 2 (App. C.1) and Fig. 5b)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import pandas as pd

from ..core.utils import ConfigError, check_choice
from ..evaluation import parse_attack
from .base import Experiment, TrainingParams, register_experiment
from .claims import (appropriate_eta_helps_both, boundary_budget_hardly_moves_robustness, budget_axis,
                     moderate_boundary_budget_helps_clean, nonboundary_needs_full_budget)
from .figures import (boundary_fraction_figure, boundary_partition_figure, budget_grid_figure, budget_sweep_figure,
                      eta_sweep_figure)
from .measures import autoattack_spec, boundary_partition, robust_correct
from .runtime import Context

Key = tuple[float, float, float]  # (boundary scale, non-boundary scale, eta)


@dataclass
class BoundarySamplesParams(TrainingParams):
    eta: float = field(default=0.1, metadata={"help": "partition the budget variants use (paper: 0.1)",
                                              "range": (0.0, 1.0)})
    eta_mode: str = field(default="scale", metadata={
        "help": "reduced example: scale moves x by eta times the PGD perturbation (released code), ball runs PGD "
                "in the eta eps ball", "choices": ("scale", "ball")})
    budget_mode: str = field(default="scale", metadata={
        "help": "budget s: scale moves x by s times the PGD perturbation, ball runs PGD in the s eps ball",
        "choices": ("scale", "ball")})
    budget_scales: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={
        "help": "budgets of each group, as fractions of eps (1.0 is always added: the PGD-AT reference)"})
    grid: str = field(default="axes", metadata={
        "help": "axes: scale one group, the other at eps; full: every (boundary, non-boundary) pair",
        "choices": ("axes", "full")})
    eta_values: list = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5], metadata={
        "help": "the eta sweep (RAAT, Fig. 5b); [] for none"})
    eta_sweep_boundary_scale: Optional[float] = field(default=None, metadata={
        "help": "None: boundary samples train at scale eta (RAAT BOUND); or a fixed scale", "range": (0.0, 1.0)})
    partition_etas: list = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75], metadata={
        "help": "etas of the partition of training images by the full-budget model"})
    n_partition: int = field(default=1000, metadata={"help": "training images partitioned", "range": (1, None)})
    eval_pgd_steps: int = field(default=20, metadata={"help": "PGD steps of the evaluation", "range": (1, None)})
    aa_attacks: Any = field(default=None, metadata={
        "help": "None or standard: AutoAttack standard; apgd; or a list of AutoAttack attacks, e.g. [apgd-ce]"})
    aa_n_iter: Optional[int] = field(default=None, metadata={"help": "AutoAttack iterations (None: official)",
                                                             "range": (1, None)})
    aa_n_restarts: Optional[int] = field(default=None, metadata={"help": "AutoAttack restarts (None: official)",
                                                                 "range": (1, None)})
    robust_tolerance: float = field(default=2.0, metadata={
        "help": "accuracy points within which two robust accuracies count as the same", "range": (0.0, None)})
    clean_tolerance: Optional[float] = field(default=None, metadata={
        "help": "clean-accuracy gain (points) that counts beyond the 95 % interval; None: any gain",
        "range": (0.0, None)})


def _key(b: float, n: float, e: float) -> Key:
    return round(float(b), 6), round(float(n), 6), round(float(e), 6)


def _label(key: Key) -> str:
    return f"b={key[0]:g} nb={key[1]:g} eta={key[2]:g}"


@register_experiment
class BoundarySamples(Experiment):
    """RAAT's boundary samples: clean-correct images whose adversarial example and whose reduced example (eta
    times the perturbation, or PGD in the eta eps ball) are both misclassified (RAAT, Eq. 8-9). Variants of PGD-AT
    that give each group its own budget, the share of boundary samples over training, and a sweep of eta; clean,
    PGD and AutoAttack accuracy of each variant (RAAT, Fig. 2 (App. C.1) and Fig. 5b)."""

    name = "boundary_samples"
    source = "RAAT, Fig. 2 (App. C.1), Fig. 5b"
    Params = BoundarySamplesParams
    outputs = ("boundary_fraction.csv", "boundary_partition.csv", "budget_sweep.csv", "eta_sweep.csv",
               "per_image_correct.json", "boundary_fraction.png", "boundary_partition.png", "budget_sweep.png")

    def validate(self, p: Any) -> None:
        if not all(0.0 <= float(s) <= 1.0 for s in p.budget_scales):
            raise ConfigError(f"budget_scales={p.budget_scales!r}: every scale must be in [0, 1]")
        check_choice("grid", p.grid, ("axes", "full"))

    def variants(self, p: Any) -> dict[Key, set[str]]:
        """(boundary scale, non-boundary scale, eta) -> the sweeps it belongs to; the full budget at ``eta`` is the
        PGD-AT reference."""
        scales = sorted({float(s) for s in p.budget_scales} | {1.0})
        out: dict[Key, set[str]] = {}
        pairs = ([(s, 1.0) for s in scales] + [(1.0, s) for s in scales] if p.grid == "axes"
                 else [(a, b) for a in scales for b in scales])
        for b, n in pairs:
            out.setdefault(_key(b, n, p.eta), set()).add("budget")
        for e in p.eta_values:
            b = e if p.eta_sweep_boundary_scale is None else p.eta_sweep_boundary_scale
            out.setdefault(_key(b, 1.0, e), set()).add("eta")
        return out

    def plan(self, p: Any, device: str) -> dict[str, Any]:
        return {_label(key): self.run_config(
            p, "boundary_budget", {"boundary_scale": key[0], "nonboundary_scale": key[1], "eta": key[2],
                                   "eta_mode": p.eta_mode, "budget_mode": p.budget_mode},
            device=device, eval_pgd_steps=p.eval_pgd_steps) for key in sorted(self.variants(p))}

    def measure(self, ctx: Context) -> dict[str, Any]:
        p, ds = ctx.params, ctx.dataset
        variants = self.variants(p)
        reference = _key(1.0, 1.0, p.eta)
        history = []
        for key in sorted(variants):
            for row in ctx.history(_label(key)):
                history.append({"variant": _label(key), "boundary_scale": key[0], "nonboundary_scale": key[1],
                                "eta": key[2], **{k: row.get(k) for k in (
                                    "epoch", "train_boundary_frac", "train_nonboundary_frac",
                                    "train_misclassified_frac", "train_boundary_frac_of_correct", "test_clean_acc")}})
        x_part, y_part, _ = ds.eval_subset(min(p.n_partition, len(ds.train_y)), split="train")  # stratified, seeded
        partition = boundary_partition(ctx.models[_label(reference)], x_part.float() / 255, y_part,
                                       etas=p.partition_etas, eps=p.eps, step_size=p.step_size, steps=p.train_steps,
                                       eta_mode=p.eta_mode, batch_size=p.eval_batch_size, num_classes=ds.num_classes,
                                       seed=p.seed)
        aa_label = parse_attack(autoattack_spec(p.aa_attacks, p.aa_n_iter, p.aa_n_restarts)).display_name()
        rows, per_image = [], {}
        for k, key in enumerate(sorted(variants)):
            began = time.time()
            correct = robust_correct(ctx.models[_label(key)], ctx.x, ctx.y, eps=p.eps, step_size=p.step_size,
                                     pgd_steps=p.eval_pgd_steps, aa_attacks=p.aa_attacks, aa_n_iter=p.aa_n_iter,
                                     aa_n_restarts=p.aa_n_restarts, batch_size=p.eval_batch_size,
                                     num_classes=ds.num_classes, seed=p.seed)
            acc = {name: 100.0 * int(v.sum()) / len(v) for name, v in correct.items()}
            per_image[_label(key)] = {"clean_acc": correct["clean"].tolist(), "aa_acc": correct["aa"].tolist()}
            last = [h for h in history if h["variant"] == _label(key)][-1]
            rows.append({"variant": _label(key), "boundary_scale": key[0], "nonboundary_scale": key[1], "eta": key[2],
                         "sweeps": "+".join(sorted(variants[key])), "clean_acc": acc["clean"],
                         "pgd_acc": acc[f"pgd{p.eval_pgd_steps}"], "aa_acc": acc["aa"],
                         "final_train_boundary_frac": last["train_boundary_frac"],
                         "run_dir": ctx.run_dirs[_label(key)]})
            ctx.log(f"evaluated {k + 1}/{len(variants)} {_label(key)}: clean {acc['clean']:.1f}%, "
                    f"PGD-{p.eval_pgd_steps} {acc[f'pgd{p.eval_pgd_steps}']:.1f}%, {aa_label} {acc['aa']:.1f}% "
                    f"({time.time() - began:.0f} s)")
        return {"dataset": p.dataset, "model": p.model, "eps": p.eps, "eta": p.eta, "eta_mode": p.eta_mode,
                "budget_mode": p.budget_mode, "grid": p.grid,
                "budget_scales": sorted({float(s) for s in p.budget_scales} | {1.0}), "eta_values": list(p.eta_values),
                "n_eval": int(len(ctx.y)), "num_classes": ds.num_classes, "eval_pgd_steps": p.eval_pgd_steps,
                "aa": {"attacks": p.aa_attacks, "n_iter": p.aa_n_iter, "n_restarts": p.aa_n_restarts,
                       "label": aa_label},
                "robust_tolerance": p.robust_tolerance, "clean_tolerance": p.clean_tolerance,
                "reference_variant": _label(reference), "variants": rows, "boundary_fraction": history,
                "partition": partition.to_dict(orient="records"), "per_image": per_image}

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        """The four claims on the budget axes and the eta sweep, each a paired interval on the same test images
        (:mod:`atkit.experiments.claims`); robustness is the AutoAttack accuracy."""
        rows, eta = record["variants"], float(record["eta"])
        n, classes = int(record["n_eval"]), int(record.get("num_classes", 10))
        budget = [r for r in rows if "budget" in r["sweeps"]]
        b_axis, n_axis = budget_axis(budget, "boundary_scale", eta), budget_axis(budget, "nonboundary_scale", eta)
        ref = next(r for r in rows if r["variant"] == record["reference_variant"])
        eta_rows = sorted((r for r in rows if "eta" in r["sweeps"]), key=lambda r: r["eta"])
        scale = {"correct": record.get("per_image") or None, "robust_label": record["aa"]["label"]}
        gain = float(p.clean_tolerance or 0.0)
        checks = [boundary_budget_hardly_moves_robustness(b_axis, n, classes, tolerance=p.robust_tolerance, **scale),
                  moderate_boundary_budget_helps_clean(b_axis, n, classes, min_gain=gain, **scale),
                  nonboundary_needs_full_budget(n_axis, n, classes, **scale)]
        if eta_rows:
            checks.append(appropriate_eta_helps_both(eta_rows, ref, n, classes, min_gain=gain, **scale))
        return checks

    def _metric_cols(self, record: Mapping[str, Any]) -> dict[str, str]:
        return {"clean_acc": "clean", "pgd_acc": f"PGD-{record['eval_pgd_steps']}", "aa_acc": record["aa"]["label"]}

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        results = pd.DataFrame(record["variants"])
        return {"boundary_fraction": pd.DataFrame(record["boundary_fraction"]),
                "boundary_partition": pd.DataFrame(record["partition"]),
                "budget_sweep": results[results["sweeps"].str.contains("budget")],
                "eta_sweep": results[results["sweeps"].str.contains("eta")].sort_values("eta")}

    def figures(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        history, results = pd.DataFrame(record["boundary_fraction"]), pd.DataFrame(record["variants"])
        scales = record["budget_scales"]
        shown = {record["reference_variant"]} | {r["variant"] for r in record["variants"] if "budget" in r["sweeps"]
                                                 and min(r["boundary_scale"], r["nonboundary_scale"]) == min(scales)}
        title = f"{p.dataset} / {p.model}, eps = {p.eps * 255:.0f}/255, eta = {p.eta:g}"
        cols = self._metric_cols(record)
        budget = results[results["sweeps"].str.contains("budget")]
        out = {"boundary_fraction": boundary_fraction_figure(
                   history[history["variant"].isin(shown)],
                   title=f"Boundary samples during training (eta = {p.eta:g}, {p.dataset} / {p.model})"),
               "boundary_partition": boundary_partition_figure(
                   pd.DataFrame(record["partition"]), title="Training samples of the full-budget (PGD-AT) model"),
               "budget_sweep": budget_sweep_figure(budget, cols, title=title)}
        if p.grid == "full":
            out["budget_grid"] = budget_grid_figure(budget, cols, title=title)
        eta_sweep = results[results["sweeps"].str.contains("eta")].sort_values("eta")
        if len(eta_sweep):
            ref = results[results["variant"] == record["reference_variant"]].iloc[0]
            how = ("boundary samples train on x'' (scale = eta)" if p.eta_sweep_boundary_scale is None
                   else f"boundary samples at {p.eta_sweep_boundary_scale:g} x eps")
            out["eta_sweep"] = eta_sweep_figure(eta_sweep, cols, title=f"Sweep of eta: {how}",
                                                reference={c: ref[c] for c in cols}, reference_label="PGD-AT")
        return out

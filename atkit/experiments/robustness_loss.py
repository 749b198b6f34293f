"""The robustness loss of TRADES and TRADES-MER and its interpolated form (FAIT/MER paper, Fig. 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
from scipy import stats as scipy_stats

from ..attacks import pgd
from ..attacks.mode import eval_logits
from ..methods.divergences import kl_per_sample
from .base import Experiment, TrainingParams, register_experiment
from .claims import ClaimCheck, model_learned
from .claims.core import judge
from .runtime import Context

SOURCE = "FAIT/MER paper, Fig. 4"
MODELS = {"trades": "TRADES", "mer": "TRADES-MER"}


@dataclass
class RobustnessLossParams(TrainingParams):
    lam: float = field(default=9.0, metadata={"help": "lambda of both models (the figure: 9)", "range": (0.0, None)})
    beta_clean: float = field(default=1.0, metadata={"help": "TRADES-MER entropy weight on p(x) (paper: 1)",
                                                     "range": (0.0, None)})
    interpolation: int = field(default=2, metadata={"help": "I: the PGD iterate x* is taken after I steps (paper: 2)",
                                                    "range": (1, None)})
    n_train_images: int = field(default=1000, metadata={
        "help": "class-stratified training images the losses are averaged over (paper: a thousand)",
        "range": (1, None)})
    seeds: list = field(default_factory=lambda: [0], metadata={
        "help": "training seeds of each model; comparing TRADES-MER with TRADES needs at least 3"})


def robustness_losses(model: torch.nn.Module, x: torch.Tensor, *, eps: float, step_size: float, steps: int,
                      interpolation: int, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``R = KL(p(x) || p(x'))`` and ``R' = KL(p(x) || p(x*)) + KL(p(x*) || p(x'))`` (FAIT/MER paper,
    Sec. 3 and 4.1): ``x'`` is TRADES's PGD-``steps`` on the KL from ``x + 0.001 N(0, 1)``, BatchNorm in eval mode,
    and ``x*`` its iterate after ``interpolation`` steps. The labels are not used (the KL attack ignores them)."""
    r, r_star = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        dummy = torch.zeros(xb.shape[0], dtype=torch.long, device=xb.device)
        x_adv, x_star = pgd(model, xb, dummy, eps=eps, step_size=step_size, steps=steps, loss="kl",
                            random_start="normal", bn_mode="eval", return_iterate_at=interpolation)
        z, z_star, z_adv = (eval_logits(model, v) for v in (xb, x_star, x_adv))
        r.append(kl_per_sample(z, z_adv).cpu())
        r_star.append((kl_per_sample(z, z_star) + kl_per_sample(z_star, z_adv)).cpu())
    return torch.cat(r), torch.cat(r_star)


def _mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of ``values``."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return mean, mean - half, mean + half


@register_experiment
class RobustnessLoss(Experiment):
    """TRADES's robustness loss ``R = KL(p(x) || p(x'))`` against FAIT's interpolated ``R'`` (``x*`` the PGD
    iterate after I steps), for TRADES and TRADES-MER trained with the same lambda (FAIT/MER paper, Fig. 4 and
    Sec. 5.1): the paper finds R' below R for both, and R of TRADES-MER below that of TRADES."""

    name = "robustness_loss"
    source = SOURCE
    Params = RobustnessLossParams
    outputs = ("robustness_loss.csv", "robustness_loss_per_image.csv")

    def plan(self, p: Any, device: str) -> dict[str, Any]:
        params = {"trades": {"lam": p.lam}, "mer": {"lam": p.lam, "beta_clean": p.beta_clean, "beta_adv": 0.0}}
        return {f"{m} s{s}": self.run_config(p, m, params[m], device=device, seed=int(s))
                for s in p.seeds for m in MODELS}

    def measure(self, ctx: Context) -> dict[str, Any]:
        p, ds = ctx.params, ctx.dataset
        x, _, _ = ds.eval_subset(min(p.n_train_images, len(ds.train_y)), split="train")  # class-stratified, seeded
        x = x.float().div(255).to(ctx.device)
        rows = []
        for label, model in ctx.models.items():
            method, seed = label.rsplit(" s", 1)
            torch.manual_seed(p.seed)
            r, r_star = robustness_losses(model, x, eps=p.eps, step_size=p.step_size, steps=p.train_steps,
                                          interpolation=p.interpolation, batch_size=p.eval_batch_size)
            clean = 100.0 * float((eval_logits(model, ctx.x.to(ctx.device)).argmax(1).cpu() == ctx.y).float().mean())
            rows.append({"method": method, "seed": int(seed), "clean_acc": clean, "R": float(r.mean()),
                         "R_interpolated": float(r_star.mean()), "_r": r.tolist(), "_r_star": r_star.tolist()})
            ctx.log(f"{label}: R {rows[-1]['R']:.4f}, R' {rows[-1]['R_interpolated']:.4f}, clean {clean:.1f}%")
        return {"dataset": p.dataset, "model": p.model, "lam": p.lam, "interpolation": p.interpolation,
                "n_train_images": int(x.shape[0]), "n_eval": int(len(ctx.y)), "num_classes": ds.num_classes,
                "models": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                "_per_image": {f"{r['method']} s{r['seed']}": {"R": r["_r"], "R_interpolated": r["_r_star"]}
                               for r in rows}}

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        """Finding 1, per model: the per-image mean of ``R' - R`` below zero (95 % t interval over the training
        images). Finding 2, a method claim: mean R of TRADES-MER below TRADES's, judged over training seeds (paired
        t interval; at least 3 seeds, else not judged: one run per method compares two networks, not methods)."""
        classes, n = int(record.get("num_classes", 10)), int(record["n_eval"])
        learned = {f"{m['method']} s{m['seed']}": model_learned(m["clean_acc"], classes, n=n,
                                                              name=f"{MODELS[m['method']]} seed {m['seed']}")
                   for m in record["models"]}
        checks: list[ClaimCheck] = []
        for label, per in record["_per_image"].items():
            diffs = [b - a for a, b in zip(per["R"], per["R_interpolated"])]
            mean, low, high = _mean_interval(diffs)
            method = MODELS[label.rsplit(" s", 1)[0]]
            checks.append(judge(f"{method} ({label.rsplit(' ', 1)[1]}): R' below R", SOURCE,
                                "95 % t interval of the per-image mean of R' - R over the training images: reproduces "
                                "below 0, not reproduced above 0, inconclusive when it holds 0", [learned[label]],
                                reproduces=high < 0, contradicts=low > 0,
                                measured=f"R' - R = {mean:+.4f} [{low:+.4f}, {high:+.4f}] on {len(diffs)} images",
                                numbers={"difference": mean, "ci95": [low, high], "n": len(diffs)}))
        by_seed = {}
        for m in record["models"]:
            by_seed.setdefault(m["seed"], {})[m["method"]] = m["R"]
        paired = [s for s, v in by_seed.items() if {"trades", "mer"} <= set(v)]
        rule = ("paired Student-t 95 % interval over training seeds of mean R (TRADES-MER) - mean R (TRADES): reproduces "
                "below 0, not reproduced above 0, inconclusive when it holds 0; at least 3 seeds")
        claim = "R of TRADES-MER below R of TRADES at the same lambda"
        models = list(learned.values())
        if len(paired) < 3:
            checks.append(judge(claim, SOURCE, rule, models, missing=(
                f"{len(paired)} seed(s) per method: one training run per method compares two networks, not the "
                "methods (give seeds: [0, 1, 2] or more)")))
        else:
            mean, low, high = _mean_interval([by_seed[s]["mer"] - by_seed[s]["trades"] for s in paired])
            checks.append(judge(claim, SOURCE, rule, models, reproduces=high < 0, contradicts=low > 0,
                                measured=f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] over seeds {sorted(paired)}",
                                numbers={"difference": mean, "ci95": [low, high], "seeds": sorted(paired)}))
        return checks

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        per_image = pd.concat([pd.DataFrame({"model": label, "image": range(len(v["R"])), **v})
                               for label, v in record["_per_image"].items()])
        return {"robustness_loss": pd.DataFrame(record["models"]), "robustness_loss_per_image": per_image}

    def load_record(self, folder: Path) -> dict[str, Any]:
        record = super().load_record(folder)
        rows = pd.read_csv(Path(folder) / "robustness_loss_per_image.csv")
        record["_per_image"] = {label: {"R": g["R"].astype(float).tolist(),
                                        "R_interpolated": g["R_interpolated"].astype(float).tolist()}
                                for label, g in rows.groupby("model", sort=False)}
        return record

"""MSE perception of success and failure cases (RPAT, Fig. 2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..attacks import pgd, random_noise
from .base import Experiment, TrainingParams, register_experiment
from .claims import PERCEPTION_MSE_SOURCE, model_learned, per_image_data_missing, perception_mse_claim
from .figures import perception_mse_figure
from .measures import perception_mse
from .runtime import Context

#: The (training, perturbation) pairs of RPAT, Fig. 2: label, training method, perturbation at test time.
PAIRS = (("Clean / Random", "standard", "random"), ("Random / Random", "random_noise", "random"),
         ("PGD-AT / PGD-{steps}", "pgd_at", "pgd"))


@dataclass
class MSEPerceptionParams(TrainingParams):
    eval_pgd_steps: int = field(default=20, metadata={"help": "PGD steps of the PGD-AT pair's test-time attack",
                                                      "range": (1, None)})


@register_experiment
class MSEPerception(Experiment):
    """How far a model's logits move between an image and its perturbed copy, ``mean_k (z_k(x) - z_k(x'))^2``,
    for the images it still classifies correctly (success) and those it gets wrong (failure), after standard
    training with uniform noise at test time, random-noise training with noise, and PGD-AT with PGD-20 (RPAT,
    Sec. 3 and Fig. 2). The paper: failure > success after the first two, failure < success after PGD-AT."""

    name = "mse_perception"
    source = "RPAT, Fig. 2"
    Params = MSEPerceptionParams
    outputs = ("mse_perception.csv", "mse_per_sample.csv", "mse_perception.png")

    def plan(self, p: Any, device: str) -> dict[str, Any]:
        return {method: self.run_config(p, method, device=device, eval_pgd_steps=p.eval_pgd_steps)
                for _, method, _ in PAIRS}

    def measure(self, ctx: Context) -> dict[str, Any]:
        p = ctx.params

        def perturb(kind: str) -> Any:
            if kind == "random":
                return lambda model, x, y: random_noise(x, eps=p.eps, norm="linf")
            return lambda model, x, y: pgd(model, x, y, eps=p.eps, step_size=p.step_size, steps=p.eval_pgd_steps,
                                           norm="linf", loss="ce", random_start="uniform")

        pairs, per_sample = [], {}
        for label, method, kind in PAIRS:
            label = label.format(steps=p.eval_pgd_steps)
            res = perception_mse(ctx.models[method], ctx.x, ctx.y, perturb(kind), num_classes=ctx.dataset.num_classes,
                                 device=ctx.device, batch_size=p.eval_batch_size)
            pairs.append({"pair": label, "training": method, **res.summary()})
            per_sample[label] = {"mse": res.mse.tolist(), "success": res.perturbed_correct.tolist(),
                                 "clean_correct": res.clean_correct.tolist()}
        return {"dataset": p.dataset, "model": p.model, "eps": p.eps, "eval_pgd_steps": p.eval_pgd_steps,
                "n_eval": int(len(ctx.y)), "num_classes": ctx.dataset.num_classes, "pairs": pairs,
                "_per_sample": per_sample}

    def _learned(self, record: Mapping[str, Any], pair: Mapping[str, Any]) -> Any:
        label = f"PGD-{record['eval_pgd_steps']}" if pair["training"] == "pgd_at" else "uniform noise"
        return model_learned(pair["clean_acc"], int(record.get("num_classes", 10)), n=int(record["n_eval"]),
                             name=pair["training"], robust=pair["perturbed_acc"], robust_label=label)

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        """Per pair, all images and the clean-correct images (flipped vs survived), by
        :func:`atkit.experiments.claims.perception_mse_claim` (seeded with the run's seed)."""
        checks, contrasts = [], []
        for pair in record["pairs"]:
            data = record["_per_sample"][pair["pair"]]
            learned = self._learned(record, pair)
            checks.append(perception_mse_claim(pair["training"], data["mse"], data["success"], learned, seed=p.seed))
            if data.get("clean_correct") is not None:
                contrasts.append(perception_mse_claim(pair["training"], data["mse"], data["success"], learned,
                                                      clean_correct=data["clean_correct"], seed=p.seed))
            else:  # a run written before per-image clean correctness was saved
                contrasts.append(per_image_data_missing(
                    f"{pair['training']}: flipped vs survived among clean-correct images", PERCEPTION_MSE_SOURCE, "",
                    self.rerun_hint(record), [learned]))
        return checks + contrasts

    def annotate(self, record: dict[str, Any], checks: list[Any]) -> None:
        """Each pair's row gets its two verdicts beside its numbers (the table the notebook shows)."""
        n = len(record["pairs"])
        for pair, check in zip(record["pairs"], checks[:n]):
            for key in ("direction", "paper_direction", "failure_minus_success", "ci95"):
                pair[key] = check["numbers"][key]
            pair["agrees_with_paper"], pair["verdict"] = check["agrees"], check["verdict"]
        for pair, check in zip(record["pairs"], checks[n:]):
            numbers = check.get("numbers") or {}
            pair["flipped_minus_survived"] = numbers.get("failure_minus_success")
            pair["ci95_clean_correct"] = numbers.get("ci95")
            pair["verdict_clean_correct"] = check["verdict"]

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        per_sample = pd.concat([pd.DataFrame({"pair": label, **data}) for label, data in record["_per_sample"].items()])
        return {"mse_perception": pd.DataFrame(record["pairs"]), "mse_per_sample": per_sample}

    def figures(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        return {"mse_perception": perception_mse_figure(pd.DataFrame(record["pairs"]),
                                                        title=f"{p.dataset} / {p.model}, eps = {p.eps * 255:.0f}/255")}

    def load_record(self, folder: Path) -> dict[str, Any]:
        record = super().load_record(folder)
        rows = pd.read_csv(Path(folder) / "mse_per_sample.csv")
        record["_per_sample"] = {
            label: {"mse": group["mse"].astype(float).tolist(), "success": group["success"].astype(bool).tolist(),
                    **({"clean_correct": group["clean_correct"].astype(bool).tolist()}
                       if "clean_correct" in group else {})}
            for label, group in rows.groupby("pair", sort=False)}
        return record

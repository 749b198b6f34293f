"""Always-failed samples shared by AT methods, and the hard-label dummy-class toy case (DUCAT, Fig. 2, 3, 4, 8)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..core.utils import ConfigError, unknown_name_error
from ..evaluation import parse_attack
from ..methods import method_names
from ..training.config import load_config
from .base import Experiment, TrainingParams, register_experiment
from .claims import (FAILURE_PATTERNS_CLAIM, FAILURE_PATTERNS_RULE, all_or_none_share, confusion_correlations,
                     hard_labels_collapse_under_autoattack, model_learned, per_image_data_missing,
                     similar_failure_patterns, transfer_follows_surrogate_success)
from .figures import confusion_matrices_figure, overlap_bars_figure, toy_case_figure, transfer_figure
from .measures import autoattack_spec, cross_attack, robust_correct
from .runtime import Context

BASELINE = "baseline: {}"
TOY = "toy: {}"


@dataclass
class AlwaysFailedOverlapParams(TrainingParams):
    schedule: str = field(default="ducat130", metadata={"help": "learning-rate schedule (DUCAT, Sec. 3.1: ducat130)"})
    methods: list = field(default_factory=lambda: ["pgd_at", "trades", "mart", "consistency_at"], metadata={
        "help": "the AT methods compared (at least two)"})
    method_params: dict = field(default_factory=lambda: {"trades": {"lam": 6.0}, "mart": {"lam": 6.0},
                                                         "consistency_at": {"lam": 1.0, "temperature": 0.5}},
                                metadata={"help": "hyperparameters per method"})
    config_files: dict = field(default_factory=dict, metadata={
        "help": "method -> a RunConfig YAML to train it with instead (its runs are reused when finished)"})
    attack_steps: int = field(default=10, metadata={"help": "PGD steps of the cross attack (DUCAT, Sec. 2.1: 10)",
                                                    "range": (1, None)})
    confusion_baseline: Optional[str] = field(default="standard", metadata={
        "help": "Fig. 8 baseline: this method trained and attacked alike (None: no baseline)"})
    toy_case: bool = field(default=True, metadata={"help": "train the hard-label dummy-class toy case (Fig. 4)"})
    toy_base: str = field(default="pgd_at", metadata={"help": "base method of the toy case"})
    toy_params: dict = field(default_factory=lambda: {"start_epoch": 105, "reference_epochs": 130}, metadata={
        "help": "DUCAT settings of the toy case (the paper: epoch 105 of 130)"})
    toy_soft: bool = field(default=True, metadata={"help": "also train soft-label DUCAT with the same settings"})
    toy_protocols: list = field(default_factory=lambda: ["published", "adaptive"], metadata={
        "help": "DUCAT protocols the toy case is evaluated under"})
    aa_attacks: Any = field(default=None, metadata={
        "help": "None or standard: AutoAttack standard; apgd; or a list of AutoAttack attacks, e.g. [apgd-ce]"})
    aa_n_iter: Optional[int] = field(default=None, metadata={"help": "AutoAttack iterations (None: official)",
                                                             "range": (1, None)})
    aa_n_restarts: Optional[int] = field(default=None, metadata={"help": "AutoAttack restarts (None: official)",
                                                                 "range": (1, None)})
    all_or_none_threshold: float = field(default=0.8, metadata={"help": "the paper: > 80 %", "range": (0.0, 1.0)})
    collapse_threshold: float = field(default=10.0, metadata={
        "help": "accuracy points PGD must exceed AutoAttack by to call it a collapse", "range": (0.0, 100.0)})


@register_experiment
class AlwaysFailedOverlap(Experiment):
    """DUCAT's motivation: the PGD-10 examples of four AT models defeat largely the same test images (Fig. 2),
    examples that fooled one model transfer to the others while the rest do not (Fig. 3), the models' confusion
    matrices under attack look alike (Fig. 8), and a dummy-class model trained with hard labels keeps a high
    PGD-10 accuracy that collapses under AutoAttack (Fig. 4, Sec. 2.2.3)."""

    name = "always_failed_overlap"
    source = "DUCAT, Fig. 2, 3, 4, 8"
    Params = AlwaysFailedOverlapParams
    outputs = ("overlap_by_class.csv", "transfer.csv", "confusion.csv", "per_image_predictions.json",
               "overlap.png", "transfer.png", "confusion.png")

    def validate(self, p: Any) -> None:
        if len(p.methods) < 2:
            raise ConfigError(f"methods={p.methods!r}: the overlap needs at least two models")
        for method in list(p.methods) + [p.toy_base]:
            if method not in method_names():
                raise unknown_name_error("method", method, method_names())
        if p.confusion_baseline is not None and p.confusion_baseline not in method_names():
            raise unknown_name_error("confusion_baseline method", p.confusion_baseline, method_names())

    def toy_variants(self, p: Any) -> dict[str, dict[str, Any]]:
        if not p.toy_case:
            return {}
        out = {"hard-label DUCAT": {**p.toy_params, "hard_labels": True}}
        if p.toy_soft:
            out["soft-label DUCAT"] = dict(p.toy_params)
        return out

    def plan(self, p: Any, device: str) -> dict[str, Any]:
        runs = {}
        for method in p.methods:
            runs[method] = (load_config(p.config_files[method], out_dir=p.runs_dir, device=device)
                            if method in p.config_files else
                            self.run_config(p, method, p.method_params.get(method, {}), device=device,
                                            eval_pgd_steps=p.attack_steps))
        if p.confusion_baseline is not None:
            runs[BASELINE.format(p.confusion_baseline)] = self.run_config(
                p, p.confusion_baseline, p.method_params.get(p.confusion_baseline, {}), device=device,
                eval_pgd_steps=p.attack_steps)
        for name, params in self.toy_variants(p).items():
            runs[TOY.format(name)] = self.run_config(p, f"{p.toy_base}+ducat", params, device=device,
                                                     eval_pgd_steps=p.attack_steps)
        return runs

    def measure(self, ctx: Context) -> dict[str, Any]:
        p, ds = ctx.params, ctx.dataset
        kw = dict(eps=p.eps, step_size=p.step_size, steps=p.attack_steps, batch_size=p.eval_batch_size,
                  num_classes=ds.num_classes, seed=p.seed)
        cross = cross_attack({m: ctx.models[m] for m in p.methods}, ctx.x, ctx.y, **kw)
        baseline = BASELINE.format(p.confusion_baseline)
        base_cross = (cross_attack({p.confusion_baseline: ctx.models[baseline]}, ctx.x, ctx.y, **kw)
                      if p.confusion_baseline is not None else None)
        accs = cross.accuracies()
        transfer = cross.transfer_table()
        off = transfer[transfer["surrogate"] != transfer["target"]]
        matrices = {name: cross.confusion(i) for i, name in enumerate(cross.names)}
        white_box_pred = cross.white_box_predictions()
        baseline_pred = {} if base_cross is None else base_cross.white_box_predictions()
        # The AT pairs' off-diagonal correlations, then every pair with the baseline (what Fig. 8 compares).
        off_diag = ~np.eye(ds.num_classes, dtype=bool)
        similarity = {}
        for i, a in enumerate(cross.names):
            for b in cross.names[i + 1:]:
                va, vb = (matrices[m].numpy()[off_diag].astype(float) for m in (a, b))
                similarity[f"{a} / {b}"] = (float(np.corrcoef(va, vb)[0, 1]) if va.std() > 0 and vb.std() > 0
                                            else float("nan"))
        similarity.update(confusion_correlations(cross.y.tolist(), {**white_box_pred, **baseline_pred},
                                                 ds.num_classes))
        toy, toy_correct = self._toy_case(ctx, p)
        # Every model's per-image prediction on its own PGD example: Fig. 8's bootstrap resamples images.
        (ctx.out / "per_image_predictions.json").write_text(json.dumps(
            {"labels": cross.y.tolist(), "white_box_pred": white_box_pred, "baseline_white_box_pred": baseline_pred}))
        return {"dataset": p.dataset, "model": p.model, "eps": p.eps, "attack_steps": p.attack_steps,
                "n_eval": int(len(ctx.y)), "num_classes": ds.num_classes, "seed": p.seed, "methods": cross.names,
                "runs": {m: ctx.run_dirs[m] for m in p.methods},
                "toy_runs": {v: ctx.run_dirs[TOY.format(v)] for v in self.toy_variants(p)},
                "clean_acc": {m: a["clean_acc"] for m, a in accs.items()},
                "white_box_acc": {m: a["white_box_acc"] for m, a in accs.items()},
                "overlap": cross.overlap_summary(), "overlap_by_class": cross.overlap_by_class(
                    ds.class_names).to_dict(orient="records"),
                "transfer_mean_fooled_pct": off.groupby("subset")["fooled_pct"].mean().to_dict(),
                "transfer": transfer.to_dict(orient="records"),
                "confusion": {k: v.tolist() for k, v in matrices.items()}, "confusion_similarity": similarity,
                "class_names": list(ds.class_names),
                "confusion_baseline": p.confusion_baseline,
                "baseline_runs": {} if base_cross is None else {p.confusion_baseline: ctx.run_dirs[baseline]},
                "baseline_acc": {} if base_cross is None else base_cross.accuracies(),
                "aa": {"attacks": p.aa_attacks, "n_iter": p.aa_n_iter, "n_restarts": p.aa_n_restarts,
                       "label": parse_attack(autoattack_spec(p.aa_attacks, p.aa_n_iter, p.aa_n_restarts)).display_name()},
                "toy_case": toy, "toy_base": p.toy_base, "toy_protocols": list(p.toy_protocols),
                "all_or_none_threshold": p.all_or_none_threshold, "collapse_threshold": p.collapse_threshold,
                "per_image": toy_correct,
                "_predictions": {"labels": cross.y.tolist(), "white_box_pred": white_box_pred,
                                 "baseline_white_box_pred": baseline_pred}}

    def _toy_case(self, ctx: Context, p: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[bool]]]]:
        """PGD and AutoAttack accuracy of the toy base and of each DUCAT variant under each protocol."""
        rows, correct_flags = [], {}

        def score(name: str, model: Any, protocol: Optional[str] = None) -> dict[str, Any]:
            correct = robust_correct(model, ctx.x, ctx.y, eps=p.eps, step_size=p.step_size, pgd_steps=p.attack_steps,
                                     aa_attacks=p.aa_attacks, aa_n_iter=p.aa_n_iter, aa_n_restarts=p.aa_n_restarts,
                                     protocol=protocol, batch_size=p.eval_batch_size,
                                     num_classes=ctx.dataset.num_classes, seed=p.seed)
            acc = {k: 100.0 * int(v.sum()) / len(v) for k, v in correct.items()}
            correct_flags[name] = {"pgd_acc": correct[f"pgd{p.attack_steps}"].tolist(),
                                   "aa_acc": correct["aa"].tolist()}
            return {"model": name, "protocol": protocol or "-", "clean_acc": acc["clean"],
                    "pgd_acc": acc[f"pgd{p.attack_steps}"], "aa_acc": acc["aa"]}

        variants = self.toy_variants(p)
        if variants and p.toy_base in p.methods:
            rows.append(score(p.toy_base, ctx.models[p.toy_base]))
        for name in variants:
            for protocol in p.toy_protocols:
                rows.append({**score(f"{name} [{protocol}]", ctx.models[TOY.format(name)], protocol),
                             "variant": name})
        for row in rows:
            row["pgd_minus_aa"] = row["pgd_acc"] - row["aa_acc"]
        return rows, correct_flags

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        """Fig. 2 (all-or-none share), Fig. 3 (transfer by surrogate success), Fig. 8 (confusion patterns against
        the baseline, bootstrapped over images) and Fig. 4 per protocol (:mod:`atkit.experiments.claims`)."""
        n, label = int(record["n_eval"]), f"PGD-{record['attack_steps']}"
        classes = int(record.get("num_classes") or len(next(iter(record["confusion"].values()))))
        models = [model_learned(acc, classes, n=n, name=name, robust=record["white_box_acc"][name], robust_label=label)
                  for name, acc in record["clean_acc"].items()]
        standard = [model_learned(a["clean_acc"], classes, n=n, name=name, robust=a["white_box_acc"],
                                  robust_label=label) for name, a in (record.get("baseline_acc") or {}).items()]
        pred = record["_predictions"]
        toy_base = record.get("toy_base", "pgd_at")
        if pred is not None:
            patterns = similar_failure_patterns(pred["labels"], pred["white_box_pred"], pred["baseline_white_box_pred"],
                                                classes, models + standard, seed=int(record.get("seed", 0)))
        else:  # a run written before the per-image predictions were saved
            r = [v for v in record["confusion_similarity"].values() if v == v]  # the AT pairs' correlations
            patterns = per_image_data_missing(
                FAILURE_PATTERNS_CLAIM, "DUCAT, Fig. 8", FAILURE_PATTERNS_RULE, self.rerun_hint(record), models,
                measured=(f"off-diagonal confusion correlation of the {len(r)} AT model pairs {min(r):.2f}-"
                          f"{max(r):.2f} (no baseline model, no per-image predictions in this run)") if r else None)
        checks = [all_or_none_share(record["overlap"], models, threshold=record.get("all_or_none_threshold", 0.8)),
                  transfer_follows_surrogate_success(record["transfer"], models), patterns]
        checks += [hard_labels_collapse_under_autoattack(
            record["toy_case"], toy_base if toy_base in record["clean_acc"] else None, n, classes, protocol=protocol,
            threshold=record.get("collapse_threshold", 10.0), correct=record.get("per_image") or None)
            for protocol in record.get("toy_protocols", ["published", "adaptive"])] if record["toy_case"] else []
        return checks

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        conf = [{"model": name, "true": t, "pred": q, "count": int(count)}
                for name, mat in record["confusion"].items() for t, row in enumerate(mat) for q, count in enumerate(row)]
        out = {"overlap_by_class": pd.DataFrame(record["overlap_by_class"]), "transfer": pd.DataFrame(record["transfer"]),
               "confusion": pd.DataFrame(conf)}
        if record["toy_case"]:
            out["toy_case"] = pd.DataFrame(record["toy_case"])
        return out

    def figures(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        k = len(record["methods"])
        out = {"overlap": overlap_bars_figure(pd.DataFrame(record["overlap_by_class"]), k,
                                              title=f"Test samples by how many of {k} AT models their "
                                                    f"PGD-{record['attack_steps']} example defeats"),
               "transfer": transfer_figure(pd.DataFrame(record["transfer"]),
                                           title=f"Transfer of PGD-{record['attack_steps']} examples between AT models"),
               "confusion": confusion_matrices_figure({m: np.asarray(v) for m, v in record["confusion"].items()},
                                                      record["class_names"],
                                                      title=f"Confusion under PGD-{record['attack_steps']}")}
        if record["toy_case"]:
            cols = {"clean_acc": "clean", "pgd_acc": f"PGD-{record['attack_steps']}", "aa_acc": record["aa"]["label"]}
            out["toy_case"] = toy_case_figure(pd.DataFrame(record["toy_case"]), cols,
                                              title="Hard labels for dummy classes: PGD-10 vs AutoAttack")
        return out

    def load_record(self, folder: Path) -> dict[str, Any]:
        record = super().load_record(folder)
        predictions = Path(folder) / "per_image_predictions.json"
        record["_predictions"] = json.loads(predictions.read_text()) if predictions.is_file() else None
        return record

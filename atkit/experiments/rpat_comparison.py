"""Adding the RP term to a base method, over seeds, against the paper's differences (RPAT, Table 1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import pandas as pd

from ..core.stats import accuracy_record, seed_summary
from ..evaluation import display_name, evaluate
from ..evaluation.compare import pooled_comparison
from . import reference
from .base import Experiment, TrainingParams, register_experiment
from .claims import (DOES_NOT_REPRODUCE, NOT_JUDGED, REPRODUCES, ClaimCheck, judged_at, model_learned,
                     published_difference_verdict, rpat_table1_direction)
from .runtime import Context

NO_PUBLISHED = "no published number"
#: Our attack -> the paper's column it is compared with (APGD-CE+DLR stands in for AutoAttack on a CPU).
PAPER_COLUMN = {"apgd": "aa"}


@dataclass
class RPATComparisonParams(TrainingParams):
    pairs: list = field(default_factory=lambda: [["pgd_at", "pgd_at+rpat"], ["trades", "trades+rpat"]], metadata={
        "help": "[base, base+rpat] pairs compared"})
    method_params: dict = field(default_factory=dict, metadata={"help": "hyperparameters per method"})
    seeds: list = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "training seeds of every arm (the run is the unit of replication; the paper uses 3)"})
    attacks: list = field(default_factory=lambda: ["clean", "pgd20", "apgd"], metadata={
        "help": "evaluation attacks of the final models (atkit.evaluation names)"})
    attack_n_eval: dict = field(default_factory=dict, metadata={
        "help": "attack -> fewer class-stratified test images for it than n_eval, e.g. {apgd: 2000}"})
    heterogeneity_level: float = field(default=0.10, metadata={
        "help": "level of Cochrans Q above which the random-effects interval is the primary one", "range": (0.0, 1.0)})


def paper_differences() -> dict[tuple[str, str], dict[str, float]]:
    """RPAT, Table 1 (CIFAR-10, l-inf, ResNet-18, best checkpoint): ``(method, base) -> {metric: method - base}``."""
    papers = {r.method: r.values for r in reference.select(["RPAT / Table 1"], dataset="cifar10")
              if r.checkpoint == "best" and r.norm == "linf"}
    return {(m, b): {k: papers[m][k] - papers[b][k] for k in papers[m] if k in papers[b]}
            for b in papers for m in papers if m == f"{b}+rpat"}


def paper_difference(method: str, base: str, attack: str) -> Optional[float]:
    """The paper's difference for ``attack`` (its AutoAttack column for APGD-CE+DLR); None if unpublished."""
    value = paper_differences().get((method, base), {}).get(PAPER_COLUMN.get(attack, attack))
    return None if value is None else round(value, 2)


def _accuracy(flags: str) -> float:
    return 100.0 * flags.count("1") / len(flags)


def accuracy_table(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (method, checkpoint): each attack's accuracy per seed with its Wilson interval, mean and sd over seeds."""
    table = []
    for which, by_method in record["flags"].items():
        for method, by_seed in by_method.items():
            entry: dict[str, Any] = {"method": method, "which": which, "seeds": sorted(int(s) for s in by_seed)}
            for attack in record["attacks"]:
                per = {s: accuracy_record(f[attack].count("1"), len(f[attack])) for s, f in by_seed.items()
                       if attack in f}
                if per:
                    summary = seed_summary(v["accuracy"] for v in per.values())
                    entry[attack] = {"mean": round(summary.mean, 2),
                                     "sd": None if summary.n_seeds < 2 else round(summary.sd, 2),
                                     "n_seeds": summary.n_seeds,
                                     "per_seed": {s: {"acc": round(v["accuracy"], 2), "n": v["n"],
                                                      "ci95": [round(c, 2) for c in v["ci95"]]}
                                                  for s, v in per.items()}}
            table.append(entry)
    return table


def compare_cell(record: Mapping[str, Any], base: str, method: str, which: str, attack: str,
                 heterogeneity_level: float = 0.10) -> Optional[ClaimCheck]:
    """One (pair, checkpoint, attack) cell: per seed the McNemar test of the two networks, the per-image difference
    pooled over the seeds both arms ran (Cochran's Q beside it, random effects when it rejects), the t interval over
    seeds, and the verdict on the paper's difference (:func:`atkit.experiments.claims.published_difference_verdict`,
    directional only where RPAT, Table 1 claims a direction). None when no seed has both arms."""
    arms = record["flags"].get(which, {})
    a, b = arms.get(method, {}), arms.get(base, {})
    seeds = sorted((s for s in a if s in b and attack in a[s] and attack in b[s]), key=int)
    if not seeds:
        return None
    flags_a = [[c == "1" for c in a[s][attack]] for s in seeds]
    flags_b = [[c == "1" for c in b[s][attack]] for s in seeds]
    claim = f"{method} vs {base}, {display_name(attack)}, {which} checkpoint, seeds {','.join(seeds)}"
    try:
        cmp = pooled_comparison(flags_a, flags_b, [int(s) for s in seeds],
                                heterogeneity_level=heterogeneity_level).to_dict()
    except ValueError as err:  # e.g. two runs that agree on every image: no per-image variance to pool
        return ClaimCheck(claim=claim, source="RPAT, Table 1", agrees=None, verdict=f"{NOT_JUDGED}: {err}",
                          measured=None, rule="the per-image paired difference pooled over seeds")
    classes = int(record.get("num_classes", 10))
    scale = []
    for name in (base, method):  # what the verdict is judged at: each arm's mean clean and PGD-20 over the seeds
        clean = [_accuracy(arms[name][s]["clean"]) for s in seeds if "clean" in arms[name][s]]
        pgd = [_accuracy(arms[name][s]["pgd20"]) for s in seeds if "pgd20" in arms[name][s]]
        if clean:
            scale.append(model_learned(sum(clean) / len(clean), classes, name=f"{name} (mean of {len(seeds)} seeds)",
                                       robust=sum(pgd) / len(pgd) if pgd else None, robust_label="PGD-20"))
    paper = paper_difference(method, base, attack)
    direction = None if paper is None else rpat_table1_direction(PAPER_COLUMN.get(attack, attack), paper)
    low, high = cmp["pooled"]["ci95"]
    verdict = NO_PUBLISHED if paper is None else published_difference_verdict(low, high, paper, direction,
                                                                              models=scale, scale=judged_at(scale[:1]))
    n = cmp["per_seed"][0]["n"]
    numbers = {"base": base, "method": method, "which": which, "attack": attack, "seeds": cmp["seeds"], "n": n,
               "per_seed": cmp["per_seed"], "pooled": cmp["pooled"], "over_seeds": cmp["over_seeds"],
               "mde80": cmp["minimal_detectable_effect_80"], "paper_difference": paper, "claimed_direction": direction,
               "verdict": verdict}
    agrees = True if verdict.startswith(REPRODUCES) else False if verdict.startswith(DOES_NOT_REPRODUCE) else None
    return ClaimCheck(
        claim=claim, source="RPAT, Table 1", agrees=agrees, verdict=verdict,
        measured=f"pooled per-image difference {cmp['pooled']['estimate']:+.2f} [{low:+.2f}, {high:+.2f}] points "
                 f"on {n} images x {len(seeds)} seeds" + ("" if paper is None else f"; paper {paper:+.2f}"),
        rule=("the per-image paired difference pooled over seeds (random effects when Cochran's Q rejects); a "
              "direction only where RPAT, Table 1 claims one, else whether the published size lies inside the 95 % "
              "interval"), numbers=numbers,
        judged_at={"text": judged_at(scale[:1]), "models": [m.record() for m in scale]})


@register_experiment
class RPATComparison(Experiment):
    """Each base method against itself with the RP term added (RPAT, Eq. 3), trained on several seeds, every final
    model evaluated on the same test images, and each published difference of RPAT, Table 1 judged against the
    per-image difference pooled over the seeds: the training run is the unit of replication."""

    name = "rpat_comparison"
    source = "RPAT, Table 1"
    Params = RPATComparisonParams
    outputs = ("accuracy.csv", "comparison.csv")

    def plan(self, p: Any, device: str) -> dict[str, Any]:
        methods = list(dict.fromkeys(m for pair in p.pairs for m in pair))
        return {f"{m} s{s}": self.run_config(p, m, p.method_params.get(m, {}), device=device, seed=int(s))
                for s in p.seeds for m in methods}

    def measure(self, ctx: Context) -> dict[str, Any]:
        p, ds = ctx.params, ctx.dataset
        flags: dict[str, dict[str, dict[str, str]]] = {}
        subsets = {}
        for attack in p.attacks:
            n = int(p.attack_n_eval.get(attack, p.n_eval))
            x, y, _ = ds.eval_subset(min(n, len(ds.test_y)))  # class-stratified, seeded: the same for every run
            subsets[attack] = (x.float() / 255, y)
        for label in ctx.models:
            method, seed = label.rsplit(" s", 1)
            per = {}
            for attack, (x, y) in subsets.items():
                res = evaluate(ctx.models[label], x, y, attacks=[attack], threat={"eps": p.eps, "step_size": p.step_size},
                               batch_size=p.eval_batch_size, device=ctx.device, seed=p.seed,
                               num_classes=ds.num_classes)
                per[attack] = "".join("1" if v else "0" for v in res.per_sample[attack].tolist())
            flags.setdefault(method, {})[seed] = per
            ctx.log(f"evaluated {label}: " + ", ".join(f"{a} {_accuracy(f):.2f}%" for a, f in per.items()))
        return {"dataset": p.dataset, "model": p.model, "eps": p.eps, "pairs": [list(x) for x in p.pairs],
                "seeds": [int(s) for s in p.seeds], "attacks": list(p.attacks), "num_classes": ds.num_classes,
                "n_images": {a: len(xy[1]) for a, xy in subsets.items()}, "flags": {"final": flags}}

    def judge(self, record: Mapping[str, Any], p: Any) -> list[Any]:
        checks = []
        for which in record["flags"]:
            for base, method in record["pairs"]:
                for attack in record["attacks"]:
                    cell = compare_cell(record, base, method, which, attack, p.heterogeneity_level)
                    if cell is not None:
                        checks.append(cell)
        return checks

    def tables(self, record: Mapping[str, Any], p: Any) -> dict[str, Any]:
        rows = [{"method": e["method"], "checkpoint": e["which"], "seeds": e["seeds"],
                 **{a: f"{e[a]['mean']:.2f} ± {e[a]['sd'] or 0:.2f}" for a in record["attacks"] if a in e}}
                for e in accuracy_table(record)]
        return {"accuracy": pd.DataFrame(rows), "comparison": pd.DataFrame(record.get("comparison") or [])}

    def annotate(self, record: dict[str, Any], checks: list[dict[str, Any]]) -> None:
        record["comparison"] = [{"claim": c["claim"], "verdict": c["verdict"],
                                 **({} if not c["numbers"] else {
                                     "paper_difference": c["numbers"]["paper_difference"],
                                     "difference": c["numbers"]["pooled"]["estimate"],
                                     "ci95": c["numbers"]["pooled"]["ci95"], "mde80": c["numbers"]["mde80"]})}
                                for c in checks]


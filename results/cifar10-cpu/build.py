"""The real-CIFAR-10 CPU results: copy what the runs wrote, summarise it into summary.json, render README.md.

    python results/cifar10-cpu/build.py collect --outputs outputs/cpu     # after the runs (copies + summary + README)
    python results/cifar10-cpu/build.py collect --outputs A/outputs/cpu --outputs B/outputs/cpu   # two checkouts
    python results/cifar10-cpu/build.py render                             # README.md again from summary.json

``collect`` copies the small files each run wrote (metrics, CSVs, figures, each training run's eval.json and
config) under ``results/cifar10-cpu/runs/``; :func:`summarise` computes every reported number from those copies
(intervals from :mod:`atkit.stats`, verdicts from :mod:`atkit.claims`); :func:`render` writes the README from the
summary alone. ``tests/test_results_cifar10_cpu.py`` repeats both steps on the committed files, so every number in
the README is the one in summary.json, and summary.json is what the committed run files give.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from atkit import reference  # noqa: E402
from atkit.claims import interval_verdict, model_learned  # noqa: E402
from atkit.stats import accuracy_record, mcnemar_test, mean_difference_interval, seed_summary  # noqa: E402

NOTEBOOKS = ("mse_perception", "always_failed_overlap", "boundary_samples")
COPIED = ("metrics.json", "eval_images.json", "*.csv", "*.png")
RPAT_PAIRS = (("pgd_at", "pgd_at+rpat"), ("trades", "trades+rpat"))
ATTACKS = ("clean", "pgd20", "cw", "apgd")
ATTACK_NAMES = {"clean": "Clean", "pgd20": "PGD-20", "cw": "CW-30", "apgd": "APGD-CE+DLR"}
SEEDS = (0, 1, 2)


# ------------------------------------------------------------------------------------------------ collect
def collect(outputs: Path, into: Path = HERE) -> None:
    """Copy the small result files of every finished notebook and training run under ``into/runs``."""
    runs = into / "runs"
    for nb in NOTEBOOKS:
        src = outputs / nb
        if not (src / "metrics.json").is_file():
            continue
        dst = runs / nb
        dst.mkdir(parents=True, exist_ok=True)
        for pattern in COPIED:
            for f in src.glob(pattern):
                if f.stat().st_size < 2_000_000:
                    shutil.copy2(f, dst / f.name)
        # The training runs behind the notebook: their per-epoch numbers (no checkpoints).
        for method, run in (json.loads((src / "metrics.json").read_text()).get("runs") or {}).items():
            run_dir = outputs.parent.parent / run if not Path(run).is_absolute() else Path(run)
            if (run_dir / "metrics.json").is_file():
                metrics = json.loads((run_dir / "metrics.json").read_text())
                (dst / "trained").mkdir(exist_ok=True)
                (dst / "trained" / f"{method}.json").write_text(
                    json.dumps({k: v for k, v in metrics.items() if k != "run_dir"}, indent=1))
    for run in sorted((outputs / "runs").glob("*")):
        if not (run / "eval.json").is_file() or not (run / "config.yaml").is_file():
            continue
        if not _is_rpat_comparison_run(_yaml(run / "config.yaml")):
            continue
        dst = runs / "train" / run.name
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("eval.json", "config.yaml", "metrics.csv"):
            shutil.copy2(run / name, dst / name)
        metrics = json.loads((run / "metrics.json").read_text())
        (dst / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "run_dir"}, indent=1))
    made = runs / "made_by.json"
    made_by = json.loads(made.read_text()) if made.is_file() else {}
    if isinstance(made_by.get("atkit_commit"), str):  # the first layout: one commit for every run
        made_by = {k: made_by["atkit_commit"] for k in ("mse_perception", "train")}
    commit = _commit(outputs.parent.parent)
    for part in (*NOTEBOOKS, "train"):
        done = (outputs / part / "metrics.json").is_file() if part != "train" else any(
            _is_rpat_comparison_run(_yaml(r.parent / "config.yaml")) for r in (outputs / "runs").glob("*/eval.json"))
        if done:
            made_by.setdefault(part, commit)  # the first checkout that made a part keeps it (its runs are reused)
    runs.mkdir(parents=True, exist_ok=True)
    made.write_text(json.dumps(made_by, indent=1, sort_keys=True))
    logs = outputs / "logs"
    if logs.is_dir():
        path = runs / "times.json"
        times = json.loads(path.read_text()) if path.is_file() else {}
        times.update({f.stem: _times(logs / f"{f.stem}.log", int(f.read_text().strip())) for f in logs.glob("*.done")})
        path.write_text(json.dumps(times, indent=1, sort_keys=True))


def _is_rpat_comparison_run(cfg: dict[str, Any]) -> bool:
    """A run of ``parameters/cpu/train/`` (not one a motivation notebook trained on the same data)."""
    ev = cfg.get("eval") or {}
    return (cfg.get("method") in {m for pair in RPAT_PAIRS for m in pair} and cfg.get("model") == "small_cnn"
            and cfg.get("schedule") == "pang110" and ev.get("final_n_test") == 2000
            and "cw" in (ev.get("final_attacks") or ()))


def _commit(checkout: Path) -> str:
    """The atkit commit of the checkout that made the runs, for provenance."""
    import subprocess  # only collect needs git

    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _times(log: Path, wall: int) -> dict[str, float]:
    """CPU seconds (user + system, the notebook's kernel included) from ``/usr/bin/time -v`` in ``log``."""
    cpu = 0.0
    for line in log.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith(("User time (seconds):", "System time (seconds):")):
            cpu += float(line.rsplit(":", 1)[1])
    return {"cpu_s": round(cpu, 1), "wall_s": wall}


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


# ---------------------------------------------------------------------------------------------- summarise
def _acc(flags: str) -> dict[str, Any]:
    k = flags.count("1")
    rec = accuracy_record(k, len(flags))
    return {"acc": round(rec["accuracy"], 2), "ci95": [round(v, 2) for v in rec["ci95"]], "n": rec["n"]}


def summarise_mse(folder: Path) -> Optional[dict[str, Any]]:
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    per_pair: dict[str, dict[bool, list[float]]] = {}
    with open(folder / "mse_per_sample.csv") as fh:
        for row in csv.DictReader(fh):
            per_pair.setdefault(row["pair"], {True: [], False: []})[row["success"] == "True"].append(float(row["mse"]))
    expected = {"standard": "positive", "random_noise": "positive", "pgd_at": "negative"}  # sign of failure − success
    pairs = []
    for p in metrics["pairs"]:
        groups = per_pair[p["pair"]]
        learned = model_learned(p["clean_acc"], 10, n=metrics["n_eval"], name=p["training"])
        entry = {"pair": p["pair"], "training": p["training"], "clean_acc": round(p["clean_acc"], 2),
                 "perturbed_acc": round(p["perturbed_acc"], 2), "n_success": p["n_success"],
                 "n_failure": p["n_failure"], "mse_success": round(p["mse_success"], 4),
                 "mse_failure": round(p["mse_failure"], 4),
                 "paper": "failure > success" if expected[p["training"]] == "positive" else "failure < success"}
        if len(groups[True]) >= 2 and len(groups[False]) >= 2:
            diff = mean_difference_interval(groups[False], groups[True])
            entry["failure_minus_success"] = round(diff["difference"], 4)
            entry["ci95"] = [round(v, 4) for v in diff["ci95"]]
            entry["verdict"] = interval_verdict(diff["ci95"][0], diff["ci95"][1], expected[p["training"]],
                                                models=[learned])
        else:
            entry["verdict"] = "not judged: no success or no failure cases"
        pairs.append(entry)
    trained = {}
    for f in sorted((folder / "trained").glob("*.json")):
        last = json.loads(f.read_text())["history"][-1]
        trained[f.stem] = {k: round(v, 2) for k, v in last.items() if k.startswith("test_") and k.endswith("_acc")}
    return {"n_eval": metrics["n_eval"], "eval_pgd_steps": metrics["eval_pgd_steps"], "pairs": pairs,
            "trained_last_epoch": trained,
            "ci_method": "BCa bootstrap of the difference of mean MSEs, 4999 resamples, seed 0"}


def _train_runs(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(folder.glob("*")):
        if not (run / "eval.json").is_file():
            continue
        cfg, ev = _yaml(run / "config.yaml"), json.loads((run / "eval.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        for which in ("best", "final"):
            if which not in ev:
                continue
            flags = ev[which]["per_sample"]
            rows.append({"method": cfg["method"], "seed": int(cfg.get("seed", 0)), "which": which, "run": run.name,
                         "best_epoch": ev.get("best_epoch"), "epochs": metrics.get("epochs"),
                         "images": ev.get("images", {}).get("fingerprint"), "flags": flags,
                         **{a: _acc(flags[a]) for a in ATTACKS if a in flags}})
    return rows


def summarise_rpat(folder: Path) -> Optional[dict[str, Any]]:
    rows = _train_runs(folder)
    if not rows:
        return None
    table = []
    for method in [m for pair in RPAT_PAIRS for m in pair]:
        for which in ("best", "final"):
            mine = [r for r in rows if r["method"] == method and r["which"] == which]
            if not mine:
                continue
            mine.sort(key=lambda r: r["seed"])
            entry = {"method": method, "which": which, "seeds": [r["seed"] for r in mine]}
            if which == "best":  # the epoch the trainer's per-epoch PGD-10 check chose, per seed
                entry["best_epoch"] = {str(r["seed"]): r["best_epoch"] for r in mine}
            for a in ATTACKS:
                values = [r[a]["acc"] for r in mine if a in r]
                s = seed_summary(values)
                entry[a] = {"mean": round(s.mean, 2), "sd": None if s.n_seeds < 2 else round(s.sd, 2),
                            "n_seeds": s.n_seeds, "per_seed": {str(r["seed"]): r[a] for r in mine if a in r}}
            table.append(entry)
    papers = {r.method: r.values for r in reference.select(["RPAT / Table 1"], dataset="cifar10")
              if r.checkpoint == "best" and r.norm == "linf"}
    paired = []
    for base, method in RPAT_PAIRS:
        for which in ("best", "final"):
            for seed in SEEDS:
                a = [r for r in rows if (r["method"], r["which"], r["seed"]) == (method, which, seed)]
                b = [r for r in rows if (r["method"], r["which"], r["seed"]) == (base, which, seed)]
                if not a or not b or a[0]["images"] != b[0]["images"]:
                    continue
                for attack in ATTACKS:
                    if attack not in a[0]["flags"] or attack not in b[0]["flags"]:
                        continue
                    t = mcnemar_test([c == "1" for c in a[0]["flags"][attack]],
                                     [c == "1" for c in b[0]["flags"][attack]])
                    paper_key = {"apgd": "aa"}.get(attack, attack)
                    paper_diff = (papers.get(method, {}).get(paper_key, float("nan")) -
                                  papers.get(base, {}).get(paper_key, float("nan")))
                    sign = None if paper_diff != paper_diff else ("positive" if paper_diff > 0 else "negative")
                    paired.append({"base": base, "method": method, "which": which, "seed": seed, "attack": attack,
                                   "difference": round(t.difference, 2), "ci95": [round(v, 2) for v in t.diff_ci95],
                                   "p_value": round(t.p_value, 4), "only_method": t.only_a, "only_base": t.only_b,
                                   "n": t.n, "paper_difference": None if sign is None else round(paper_diff, 2),
                                   "verdict": "no published number" if sign is None else interval_verdict(
                                       t.diff_ci95[0], t.diff_ci95[1], sign)})
    return {"table": table, "paired": paired,
            "paper": {m: papers.get(m) for pair in RPAT_PAIRS for m in pair},
            "test": "exact McNemar on the same 2,000 test images, difference with its Newcombe (method 10) interval"}


def summarise_notebook_checks(folder: Path) -> Optional[dict[str, Any]]:
    """The checks a motivation notebook wrote into its metrics.json (its own noise rules and learned guard)."""
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    return {k: metrics[k] for k in ("n_eval", "checks", "summary", "transfer", "budget", "toy_case") if k in metrics}


def summarise(root: Path = HERE) -> dict[str, Any]:
    runs = root / "runs"
    times = json.loads((runs / "times.json").read_text()) if (runs / "times.json").is_file() else {}
    made_by = json.loads((runs / "made_by.json").read_text()) if (runs / "made_by.json").is_file() else {}
    return {"made_by": made_by,
            "mse_perception": summarise_mse(runs / "mse_perception"),
            "rpat": summarise_rpat(runs / "train"),
            "always_failed_overlap": summarise_notebook_checks(runs / "always_failed_overlap"),
            "boundary_samples": summarise_notebook_checks(runs / "boundary_samples"),
            "times": times}


# ------------------------------------------------------------------------------------------------- render
def _ci(entry: dict[str, Any]) -> str:
    return f"{entry['acc']:.2f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"


def render(summary: dict[str, Any], template: Path = HERE / "README.template.md") -> str:
    sections = []
    mse = summary.get("mse_perception")
    if mse:
        lines = [f"Test images: {mse['n_eval']} (class-stratified), PGD-{mse['eval_pgd_steps']} for the PGD-AT pair. "
                 f"Interval: {mse['ci_method']}.", "",
                 "| pair | clean % | perturbed % | success MSE (n) | failure MSE (n) | failure − success [95 % CI] "
                 "| paper (RPAT, Fig. 2) | verdict |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for p in mse["pairs"]:
            diff = (f"{p['failure_minus_success']:.4f} [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]"
                    if "ci95" in p else "n/a")
            lines.append(f"| {p['pair']} | {p['clean_acc']:.2f} | {p['perturbed_acc']:.2f} | "
                         f"{p['mse_success']:.4f} ({p['n_success']}) | {p['mse_failure']:.4f} ({p['n_failure']}) | "
                         f"{diff} | {p['paper']} | {p['verdict']} |")
        if mse.get("trained_last_epoch"):
            lines += ["", "The three models at their last epoch (the trainer's per-epoch check on 1,000 class-stratified "
                      "test images; PGD-10, 2/255 steps):", "", "| model | clean % | PGD-10 % |", "| --- | ---: | ---: |"]
            lines += [f"| {m} | {v.get('test_clean_acc', float('nan')):.1f} | {v.get('test_pgd10_acc', float('nan')):.1f} |"
                      for m, v in mse["trained_last_epoch"].items()]
        sections.append("\n".join(lines))
    else:
        sections.append("Not run yet.")
    rp = summary.get("rpat")
    if rp:
        lines = ["Accuracy in % on 2,000 class-stratified test images [95 % Wilson interval] per seed; "
                 "mean ± sd over the seeds run.", "",
                 "| method | checkpoint | seeds | " + " | ".join(ATTACK_NAMES[a] for a in ATTACKS) + " |",
                 "| --- | --- | --- | " + " | ".join("---:" for _ in ATTACKS) + " |"]
        for e in rp["table"]:
            cells = []
            for a in ATTACKS:
                s = e[a]
                if s["n_seeds"] == 1:
                    cells.append(_ci(next(iter(s["per_seed"].values()))))
                else:
                    cells.append(f"{s['mean']:.2f} ± {s['sd']:.2f}")
            which = e["which"]
            if e.get("best_epoch"):
                epochs = [str(v) for v in e["best_epoch"].values()]
                which += f" (epoch{'s' if len(epochs) > 1 else ''} {', '.join(epochs)})"
            lines.append(f"| {e['method']} | {which} | {','.join(map(str, e['seeds']))} | " + " | ".join(cells) + " |")
        lines += ["", f"Paired test ({rp['test']}); paper difference from RPAT, Table 1 (ResNet-18, best checkpoint; "
                  "the paper's AA is compared with APGD-CE+DLR here).", "",
                  "| comparison | checkpoint | seed | attack | difference [95 % CI] | p | paper difference | verdict |",
                  "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |"]
        if not rp["paired"]:
            lines[-3:] = ["No method has both itself and its base run on the same seed yet."]
        for p in rp["paired"]:
            paper = "n/a" if p["paper_difference"] is None else f"{p['paper_difference']:+.2f}"
            lines.append(f"| {p['method']} vs {p['base']} | {p['which']} | {p['seed']} | {ATTACK_NAMES[p['attack']]} | "
                         f"{p['difference']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['p_value']:.3g} | "
                         f"{paper} | {p['verdict']} |")
        sections.append("\n".join(lines))
    else:
        sections.append("Not run yet.")
    for key in ("always_failed_overlap", "boundary_samples"):
        nb = summary.get(key)
        if not nb:
            sections.append("Not run yet.")
            continue
        lines = ["| check | value | verdict |", "| --- | --- | --- |"]
        for name, check in (nb.get("checks") or {}).items():
            value = {k: v for k, v in check.items() if k not in ("agrees", "verdict", "claim")} if isinstance(
                check, dict) else check
            verdict = check.get("verdict", check.get("agrees")) if isinstance(check, dict) else ""
            lines.append(f"| {name} | `{json.dumps(value, default=str)[:160]}` | {verdict} |")
        sections.append("\n".join(lines))
    times = summary.get("times") or {}
    sections.append("\n".join(["| run | CPU time (min, user + system) | wall time (min) |", "| --- | ---: | ---: |"] +
                               [f"| {k} | {v['cpu_s'] / 60:.1f} | {v['wall_s'] / 60:.1f} |" for k, v in sorted(times.items())])
                    if times else "none yet")
    made_by = summary.get("made_by") or {}
    sections.append(", ".join(f"`{c[:12]}` ({', '.join(p for p in sorted(made_by) if made_by[p] == c)})"
                              for c in sorted(set(made_by.values()))) or "unknown")
    text = template.read_text()
    for i, body in enumerate(sections):
        text = text.replace(f"{{{{section{i}}}}}", body)
    return text


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["collect", "render"])
    p.add_argument("--outputs", action="append", default=None,
                   help="an outputs folder of the runs (repeat for several checkouts; default outputs/cpu)")
    args = p.parse_args(argv)
    if args.step == "collect":
        for outputs in args.outputs or ["outputs/cpu"]:
            collect(Path(outputs))
    summary = summarise()
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (HERE / "README.md").write_text(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

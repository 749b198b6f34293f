"""The real-CIFAR-10 CPU results: copy what the runs wrote, summarise it into summary.json, render README.md.

    python results/cifar10-cpu/build.py collect --outputs outputs/cpu     # after the runs (copies + summary + README)
    python results/cifar10-cpu/build.py collect --outputs A/outputs/cpu --outputs B/outputs/cpu   # two checkouts
    python results/cifar10-cpu/build.py collect-round2 --outputs outputs/cpu/round2/runs   # the second RPAT round
    python results/cifar10-cpu/build.py render                             # README.md again from summary.json

``collect`` copies the small files each run wrote (metrics, CSVs, figures, each training run's eval.json and
config) under ``results/cifar10-cpu/runs/``, ``collect-round2`` those of the second round under ``round2/``;
:func:`summarise` computes every reported number from those copies (intervals from :mod:`atkit.core.stats`, verdicts
from :mod:`atkit.experiments.claims`, the RPAT comparison through :func:`atkit.evaluation.compare.compare_arms` in ``rpat_comparison.py``);
:func:`render` writes the README from the summary alone. ``tests/test_results_cifar10_cpu.py`` repeats both steps on
the committed files, so every number in the README is the one in summary.json, and summary.json is what the
committed run files give.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from atkit.experiments import judge_folder  # noqa: E402
from atkit.core.fast import PARITY_METRICS, bf16_parity_decision  # noqa: E402
from atkit.core.stats import accuracy_record  # noqa: E402
from rpat_comparison import (RPAT_PAIRS, collect_round2, render_round1, render_round2, summarise_round1,  # noqa: E402
                             summarise_round2, verdict_rows)

NOTEBOOKS = ("mse_perception", "always_failed_overlap", "boundary_samples")
PAPERS = ("RPAT", "RAAT", "DUCAT", "FAIT")
SOURCES = {"mse_perception": "RPAT, Fig. 2", "always_failed_overlap": "DUCAT, Fig. 2, 3, 4, 8",
           "boundary_samples": "RAAT, Fig. 2 (App. C.1), Fig. 5b"}
COPIED = ("metrics.json", "eval_images.json", "per_image_correct.json", "per_image_predictions.json", "*.csv", "*.png")
# How to rerun a notebook whose committed run predates the per-image data a rule needs.
RERUN = {nb: (f"python -m atkit notebook {nb} --params parameters/cpu/{nb}.yaml --out outputs/cpu/{nb} "
              "--set dataset=folder --set data.root=data/cifar10-jpeg") for nb in NOTEBOOKS}
PARITY_METHODS = ("pgd_at", "trades", "pgd_at+rpat")
# Training runs by the folder they were written to (the runs_dir of the queue) and the one they are copied to.
TRAIN_FOLDERS = {"runs": "train", "runs-bf16": "train-bf16"}
LOG_FOLDERS = {"logs": "", "logs-bf16": "bf16-"}
BENCHMARKS_README = HERE.parent.parent / "benchmarks" / "README.md"
PROJECT_README = HERE.parent.parent / "docs" / "notebooks.md"  # the verdict block of the notebooks page
VERDICT_BLOCK = ("<!-- real-data-verdicts: rendered by results/cifar10-cpu/build.py from summary.json -->",
                 "<!-- /real-data-verdicts -->")
PRECISION_BLOCK = ("<!-- precision-parity: rendered by results/cifar10-cpu/build.py from summary.json -->",
                   "<!-- /precision-parity -->")


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
        # Run folders by their path in the checkout that made them, not this machine's absolute path.
        made_in = str(outputs.resolve().parent.parent) + "/"
        for f in [*dst.glob("*.json"), *dst.glob("*.csv")]:
            text = f.read_text()
            if made_in in text:
                f.write_text(text.replace(made_in, ""))
        # Runs made before the notebooks cited the paper by name carry an internal label: cite the figure instead.
        metrics = json.loads((dst / "metrics.json").read_text())
        if not str(metrics.get("source", "")).startswith(PAPERS):
            metrics["source"] = SOURCES[nb]
            (dst / "metrics.json").write_text(json.dumps(metrics, indent=2))
        # The training runs behind the notebook: their per-epoch numbers (no checkpoints).
        for method, run in (json.loads((src / "metrics.json").read_text()).get("runs") or {}).items():
            run_dir = outputs.parent.parent / run if not Path(run).is_absolute() else Path(run)
            if (run_dir / "metrics.json").is_file():
                metrics = json.loads((run_dir / "metrics.json").read_text())
                (dst / "trained").mkdir(exist_ok=True)
                # A file name every system accepts ("toy: hard-label DUCAT" has a colon, which Windows refuses);
                # the notebook's own label goes inside.
                (dst / "trained" / f"{portable_name(method)}.json").write_text(
                    json.dumps({"label": method, **{k: v for k, v in metrics.items() if k != "run_dir"}}, indent=1))
    for run in sorted(r for src in TRAIN_FOLDERS for r in (outputs / src).glob("*")):
        if not (run / "eval.json").is_file() or not (run / "config.yaml").is_file():
            continue
        if not _is_rpat_comparison_run(_yaml(run / "config.yaml")):
            continue
        dst = runs / TRAIN_FOLDERS[run.parent.name] / run.name
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
    for part in (*NOTEBOOKS, *TRAIN_FOLDERS.values()):
        src = next((k for k, v in TRAIN_FOLDERS.items() if v == part), None)
        done = (outputs / part / "metrics.json").is_file() if src is None else any(
            _is_rpat_comparison_run(_yaml(r.parent / "config.yaml")) for r in (outputs / src).glob("*/eval.json"))
        if done:
            made_by.setdefault(part, commit)  # the first checkout that made a part keeps it (its runs are reused)
    runs.mkdir(parents=True, exist_ok=True)
    made.write_text(json.dumps(made_by, indent=1, sort_keys=True))
    path = runs / "times.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    for folder, prefix in LOG_FOLDERS.items():
        logs = outputs / folder
        if logs.is_dir():
            times.update({prefix + f.stem: _times(logs / f"{f.stem}.log", int(f.read_text().strip()))
                          for f in logs.glob("*.done")})
    path.write_text(json.dumps(times, indent=1, sort_keys=True))


def portable_name(label: str) -> str:
    """``label`` as a file name that Windows, macOS and Linux all accept: letters, digits and ``_.+-``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_")


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
    """The accuracy of per-image flags (``"1"`` = correct) with its Wilson interval."""
    return _record(flags.count("1"), len(flags))


def _record(k: int, n: int) -> dict[str, Any]:
    rec = accuracy_record(k, n)
    return {"acc": round(rec["accuracy"], 2), "ci95": [round(v, 2) for v in rec["ci95"]], "n": rec["n"]}


def summarise_mse(folder: Path) -> Optional[dict[str, Any]]:
    """RPAT, Fig. 2 on the committed mse_perception files: per pair its numbers and the verdicts of the experiment's
    own judge (:func:`atkit.experiments.judge_folder`): all images, and the clean-correct images' flipped-vs-survived
    contrast when the run saved per-image clean correctness."""
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    checks = judge_folder("mse_perception", folder, rerun=RERUN["mse_perception"])
    n = len(metrics["pairs"])
    pairs = []
    for p, check, contrast in zip(metrics["pairs"], checks[:n], checks[n:]):
        numbers = check["numbers"]
        entry = {"pair": p["pair"], "training": p["training"], "clean_acc": round(p["clean_acc"], 2),
                 "perturbed_acc": round(p["perturbed_acc"], 2), "n_success": p["n_success"],
                 "n_failure": p["n_failure"], "mse_success": round(p["mse_success"], 4),
                 "mse_failure": round(p["mse_failure"], 4), "verdict": check["verdict"],
                 "paper": "failure > success" if numbers["paper_direction"] == "failure>success" else
                 "failure < success"}
        if numbers["ci95"] is not None:
            entry["failure_minus_success"] = round(numbers["failure_minus_success"], 4)
            entry["ci95"] = [round(v, 4) for v in numbers["ci95"]]
        cc = contrast.get("numbers") or {}
        entry["clean_correct"] = {"verdict": contrast["verdict"]}
        if cc.get("n_success") is not None:
            entry["clean_correct"].update(
                n_survived=cc["n_success"], n_flipped=cc["n_failure"], mse_survived=round(cc["mse_success"], 4),
                mse_flipped=round(cc["mse_failure"], 4),
                **({} if cc["ci95"] is None else {"flipped_minus_survived": round(cc["failure_minus_success"], 4),
                                                  "ci95": [round(v, 4) for v in cc["ci95"]]}))
        pairs.append(entry)
    trained = {}
    for f in sorted((folder / "trained").glob("*.json")):
        last = json.loads(f.read_text())["history"][-1]
        trained[f.stem] = {k: round(v, 2) for k, v in last.items() if k.startswith("test_") and k.endswith("_acc")}
    return {"n_eval": metrics["n_eval"], "eval_pgd_steps": metrics["eval_pgd_steps"], "pairs": pairs,
            "trained_last_epoch": trained,
            "ci_method": "BCa bootstrap of the difference of mean MSEs, 4999 resamples, seed "
                         f"{(metrics.get('params') or {}).get('seed', 0)}"}


def _trained_in(cfg: dict[str, Any]) -> str:
    """The precision a committed run trained in: ``bf16`` when asked for; ``auto`` on the CPU was exact fp32."""
    precision = cfg.get("precision", "auto")
    if precision == "auto" and cfg.get("device") != "cpu":
        raise ValueError(f"a run with precision auto on device {cfg.get('device')!r}: its precision is not recorded")
    return "bf16" if precision == "bf16" else "fp32"


def parity_flags(runs: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """``(method, "fp32" | "bf16", seed) -> {"per_sample": final checkpoint's flags, "train_loss", "train_adv_acc"}``
    of the committed RPAT-comparison runs (``train``) and their bf16 twins (``train-bf16``)."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for precision, folder in (("fp32", runs / "train"), ("bf16", runs / "train-bf16")):
        for run in sorted(folder.glob("*/eval.json")):
            cfg = _yaml(run.parent / "config.yaml")
            if _trained_in(cfg) != precision:
                raise ValueError(f"{run.parent}: trained in {_trained_in(cfg)}, filed under {precision}")
            last = json.loads((run.parent / "metrics.json").read_text())["history"][-1]
            out[(cfg["method"], precision, int(cfg.get("seed", 0)))] = {
                "per_sample": json.loads(run.read_text())["final"]["per_sample"],
                "train_loss": round(float(last["train_loss"]), 4), "train_adv_acc": round(float(last["train_adv_acc"]), 2)}
    return out


def parity_decision(runs: dict[tuple[str, str, int], dict[str, Any]], method: str) -> tuple[list[int], dict[str, Any]]:
    """The seeds with both a bf16 and an fp32 run of ``method``, and :func:`atkit.core.fast.bf16_parity_decision` on them."""
    seeds = sorted(s for (m, p, s) in runs if m == method and p == "bf16" and (m, "fp32", s) in runs)
    pick = {p: {k: [[c == "1" for c in runs[(method, p, s)]["per_sample"][k]] for s in seeds] for k in PARITY_METRICS}
            for p in ("bf16", "fp32")}
    return seeds, bf16_parity_decision(pick["bf16"], pick["fp32"])


def summarise_precision(runs: Path) -> Optional[dict[str, Any]]:
    """bf16-vs-fp32 parity of the RPAT-comparison runs (final checkpoints) and the per-method decision."""
    if not (runs / "train-bf16").is_dir():
        return None
    found = parity_flags(runs)
    methods = []
    for method in PARITY_METHODS:
        seeds, decision = parity_decision(found, method)
        per_seed = {str(s): {p: {**{m: _acc(found[(method, p, s)]["per_sample"][m]) for m in PARITY_METRICS},
                                 **{k: found[(method, p, s)][k] for k in ("train_loss", "train_adv_acc")}}
                             for p in ("bf16", "fp32")} for s in seeds}
        methods.append({"method": method, "seeds": seeds, "decision": decision, "per_seed": per_seed})
    return {"methods": methods, "checkpoint": "final", "metrics": list(PARITY_METRICS),
            "bf16_default": sorted(m["method"] for m in methods if m["decision"]["bf16_default"])}


def _flags(folder: Path) -> dict[str, dict[str, list[bool]]]:
    """``per_image_correct.json`` of a notebook (``name -> metric -> "0101..."``) as boolean lists; ``{}`` when
    the run predates that file (the claims then use the wider independent-samples intervals)."""
    path = folder / "per_image_correct.json"
    if not path.is_file():
        return {}
    return {name: {m: [c == "1" for c in flags] for m, flags in per.items()}
            for name, per in json.loads(path.read_text()).items()}


def _check_rows(checks: list[Any]) -> list[dict[str, Any]]:
    return [{k: c.get(k) for k in ("claim", "source", "measured", "verdict", "rule")} for c in checks]


def summarise_overlap(folder: Path) -> Optional[dict[str, Any]]:
    """DUCAT, Fig. 2, 3, 4, 8 on the committed always_failed_overlap files, verdicts by the experiment's own judge."""
    if not (folder / "metrics.json").is_file():
        return None
    m = json.loads((folder / "metrics.json").read_text())
    n = int(m["n_eval"])
    checks = judge_folder("always_failed_overlap", folder, rerun=RERUN["always_failed_overlap"])  # the experiment's own rules, from its files
    models = [{"model": name, "clean": _acc_of(m["clean_acc"][name], n),
               "pgd": _acc_of(m["white_box_acc"][name], n)} for name in m["methods"]]
    models += [{"model": f"{name} (Fig. 8 baseline)", "clean": _acc_of(a["clean_acc"], n),
                "pgd": _acc_of(a["white_box_acc"], n)} for name, a in (m.get("baseline_acc") or {}).items()]
    toy = [{"model": r.get("model"), "variant": _text(r.get("variant")), "protocol": _text(r.get("protocol")),
            **{k: _acc_of(r[k], n) for k in ("clean_acc", "pgd_acc", "aa_acc") if r.get(k) is not None}}
           for r in m["toy_case"]]
    return {"n_eval": n, "attack_steps": m["attack_steps"], "aa": m["aa"]["label"], "models": models, "toy_case": toy,
            "paired_toy_intervals": bool(_flags(folder)), "checks": _check_rows(checks)}


def summarise_boundary(folder: Path) -> Optional[dict[str, Any]]:
    """RAAT, Fig. 2 and 5b on the committed boundary_samples files, verdicts by the experiment's own judge."""
    if not (folder / "metrics.json").is_file():
        return None
    m = json.loads((folder / "metrics.json").read_text())
    n, eta = int(m["n_eval"]), float(m["eta"])
    rows = m["variants"]
    flags = _flags(folder) or None
    tol = float(m.get("robust_tolerance", 2.0))
    checks = judge_folder("boundary_samples", folder, rerun=RERUN["boundary_samples"])  # the experiment's own rules, from its files
    variants = [{"variant": r["variant"], "boundary_scale": r["boundary_scale"],
                 "nonboundary_scale": r["nonboundary_scale"], "eta": r["eta"],
                 "final_train_boundary_frac": round(float(r["final_train_boundary_frac"]), 4),
                 **{k: _acc_of(r[k], n) for k in ("clean_acc", "pgd_acc", "aa_acc")}} for r in rows]
    # Who the budget axes touch: the training partition of the PGD-AT variant at its last epoch (clean-misclassified
    # samples get the full eps in every variant), and the trained model's partition of training images at the run's eta.
    ref_epochs = [r for r in m.get("boundary_fraction") or [] if r["variant"] == m["reference_variant"]]
    last = max(ref_epochs, key=lambda r: r["epoch"]) if ref_epochs else None
    train_partition = None if last is None else {
        "variant": last["variant"], "epoch": int(last["epoch"]),
        **{k: round(100.0 * float(last[f"train_{k}_frac"]), 1) for k in ("boundary", "nonboundary", "misclassified")}}
    test_partition = next(({"n": int(r["n"]), "boundary": int(r["n_boundary"]), "nonboundary": int(r["n_nonboundary"]),
                            "misclassified": int(r["n_misclassified"])}
                           for r in m.get("partition") or [] if float(r["eta"]) == eta), None)
    return {"n_eval": n, "eta": eta, "eval_pgd_steps": m["eval_pgd_steps"], "aa": m["aa"]["label"],
            "train_partition": train_partition, "test_partition": test_partition,
            "robust_tolerance": tol, "paired_intervals": flags is not None, "variants": variants,
            "checks": _check_rows(checks)}


def _text(value: Any) -> Optional[str]:
    """A table cell pandas may have written as NaN (an empty cell), as None."""
    return value if isinstance(value, str) else None


def _acc_of(percent: float, n: int) -> dict[str, Any]:
    """An accuracy given in percent on ``n`` images, with its Wilson interval."""
    return _record(int(round(float(percent) * n / 100.0)), n)


def summarise(root: Path = HERE) -> dict[str, Any]:
    runs = root / "runs"
    times = json.loads((runs / "times.json").read_text()) if (runs / "times.json").is_file() else {}
    made_by = json.loads((runs / "made_by.json").read_text()) if (runs / "made_by.json").is_file() else {}
    return {"made_by": made_by,
            "mse_perception": summarise_mse(runs / "mse_perception"),
            "rpat": summarise_round1(runs / "train"),
            "round2": summarise_round2(root / "round2"),
            "always_failed_overlap": summarise_overlap(runs / "always_failed_overlap"),
            "boundary_samples": summarise_boundary(runs / "boundary_samples"),
            "precision": summarise_precision(runs),
            "times": times}


# ------------------------------------------------------------------------------------------------- render
def _ci(entry: dict[str, Any]) -> str:
    return f"{entry['acc']:.2f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"


def _claims_table(checks: list[dict[str, Any]]) -> list[str]:
    """One row per paper claim: the claim and its source, what was measured, the verdict, the rule applied."""
    rows = ["| claim (source) | measured at this scale [95 % CI] | verdict | rule |", "| --- | --- | --- | --- |"]
    for c in checks:
        cells = [f"{c['claim']} ({c['source']})", c.get("measured") or "n/a", c["verdict"], c["rule"]]
        rows.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    return rows


def render(summary: dict[str, Any], template: Path = HERE / "README.template.md") -> str:
    sections = []
    mse = summary.get("mse_perception")
    if mse:
        lines = [f"Test images: {mse['n_eval']} (class-stratified), PGD-{mse['eval_pgd_steps']} for the PGD-AT pair. "
                 f"Interval: {mse['ci_method']}. Second row per pair: the clean-correct images only, those the "
                 "perturbation flipped (failure) against those that survived it (success).", "",
                 "| pair | images | clean % | perturbed % | success MSE (n) | failure MSE (n) | failure − success [95 % CI] "
                 "| paper (RPAT, Fig. 2) | verdict |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for p in mse["pairs"]:
            diff = (f"{p['failure_minus_success']:.4f} [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]"
                    if "ci95" in p else "n/a")
            lines.append(f"| {p['pair']} | all | {p['clean_acc']:.2f} | {p['perturbed_acc']:.2f} | "
                         f"{p['mse_success']:.4f} ({p['n_success']}) | {p['mse_failure']:.4f} ({p['n_failure']}) | "
                         f"{diff} | {p['paper']} | {p['verdict']} |")
            cc = p["clean_correct"]
            if "mse_flipped" in cc:
                diff = (f"{cc['flipped_minus_survived']:.4f} [{cc['ci95'][0]:.4f}, {cc['ci95'][1]:.4f}]"
                        if "ci95" in cc else "n/a")
                lines.append(f"| {p['pair']} | clean-correct | | | {cc['mse_survived']:.4f} ({cc['n_survived']}) | "
                             f"{cc['mse_flipped']:.4f} ({cc['n_flipped']}) | {diff} | {p['paper']} | {cc['verdict']} |")
            else:
                lines.append(f"| {p['pair']} | clean-correct | | | n/a | n/a | n/a | {p['paper']} | {cc['verdict']} |")
        if mse.get("trained_last_epoch"):
            lines += ["", "The three models at their last epoch (the trainer's per-epoch check on 1,000 class-stratified "
                      "test images; PGD-10, 2/255 steps):", "", "| model | clean % | PGD-10 % |", "| --- | ---: | ---: |"]
            lines += [f"| {m} | {v.get('test_clean_acc', float('nan')):.1f} | {v.get('test_pgd10_acc', float('nan')):.1f} |"
                      for m, v in mse["trained_last_epoch"].items()]
        sections.append("\n".join(lines))
    else:
        sections.append("Not run yet.")
    sections.append(render_round1(summary.get("rpat")))
    overlap = summary.get("always_failed_overlap")
    if overlap:
        lines = [f"{overlap['n_eval']} class-stratified test images; PGD-{overlap['attack_steps']} white-box and "
                 f"transfer attacks; {overlap['aa']} for the toy case.", "",
                 f"| model | clean % | PGD-{overlap['attack_steps']} % |", "| --- | ---: | ---: |"]
        lines += [f"| {r['model']} | {_ci(r['clean'])} | {_ci(r['pgd'])} |" for r in overlap["models"]]
        lines += ["", "Toy case (DUCAT, Fig. 4):", "", f"| model | protocol | clean % | PGD-{overlap['attack_steps']} % | {overlap['aa']} % |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r['variant'] or r['model']} | {r['protocol'] or ''} | "
                  + " | ".join(_ci(r[k]) if k in r else "n/a" for k in ("clean_acc", "pgd_acc", "aa_acc")) + " |"
                  for r in overlap["toy_case"]]
        if not overlap["paired_toy_intervals"]:
            lines += ["", "The toy-case intervals are independent-samples ones (this run predates the per-image flag "
                      "file), so wider than the paired ones a new run gives."]
        lines += ["", *_claims_table(overlap["checks"])]
        sections.append("\n".join(lines))
    else:
        sections.append("Not run yet.")
    boundary = summary.get("boundary_samples")
    if boundary:
        lines = [f"{boundary['n_eval']} class-stratified test images; partition eta = {boundary['eta']:g}; "
                 f"PGD-{boundary['eval_pgd_steps']} and {boundary['aa']}.", "",
                 f"| variant | boundary budget (x eps) | non-boundary budget (x eps) | final boundary share | clean % | "
                 f"PGD-{boundary['eval_pgd_steps']} % | {boundary['aa']} % |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {v['variant']} | {v['boundary_scale']:g} | {v['nonboundary_scale']:g} | "
                  f"{v['final_train_boundary_frac']:.4f} | {_ci(v['clean_acc'])} | {_ci(v['pgd_acc'])} | "
                  f"{_ci(v['aa_acc'])} |" for v in boundary["variants"]]
        tp, sp = boundary.get("train_partition"), boundary.get("test_partition")
        if tp:
            lines += ["", f"Who the budgets touch. Training samples at the last epoch ({tp['epoch']}) of {tp['variant']} "
                      f"(PGD-AT): boundary {tp['boundary']:.1f} %, non-boundary {tp['nonboundary']:.1f} %, "
                      f"clean-misclassified {tp['misclassified']:.1f} % (these get the full ε in every variant)."
                      + ("" if not sp else f" The trained model's partition of {sp['n']} class-stratified training images (no "
                         f"augmentation) at eta = {boundary['eta']:g}: {sp['boundary']} boundary, {sp['nonboundary']} "
                         f"non-boundary, {sp['misclassified']} misclassified.")]
        lines += ["", *_claims_table(boundary["checks"])]
        sections.append("\n".join(lines))
    else:
        sections.append("Not run yet.")
    times = summary.get("times") or {}
    sections.append("\n".join(["| run | CPU time (min, user + system) | wall time (min) |", "| --- | ---: | ---: |"] +
                               [f"| {k} | {v['cpu_s'] / 60:.1f} | {v['wall_s'] / 60:.1f} |" for k, v in sorted(times.items())])
                    if times else "none yet")
    made_by = summary.get("made_by") or {}
    sections.append(", ".join(f"`{c[:12]}` ({', '.join(p for p in sorted(made_by) if made_by[p] == c)})"
                              for c in sorted(set(made_by.values()))) or "unknown")
    sections.append(render_precision(summary))
    sections.append(render_round2(summary.get("round2"), summary.get("rpat")))
    text = template.read_text()
    for i, body in enumerate(sections):
        text = text.replace(f"{{{{section{i}}}}}", body)
    return text


def render_precision(summary: dict[str, Any]) -> str:
    """The bf16-vs-fp32 parity table and the decision per method (also the block in benchmarks/README.md)."""
    prec = summary.get("precision")
    if not prec:
        return "Not run yet."
    metric = {"clean": "clean", "pgd20": "PGD-20"}
    lines = ["Final checkpoints, accuracy in % on 2,000 class-stratified test images [95 % Wilson interval] per seed, "
             "bf16 autocast training against exact fp32 training on the same seed, data and images; both evaluated "
             "in exact fp32. Rule: " + (prec["methods"][0]["decision"]["rule"] if prec["methods"] else "n/a") + ".", "",
             "| method | seed | " + " | ".join(f"{metric[m]} fp32 | {metric[m]} bf16" for m in prec["metrics"]) +
             " | last-epoch training loss fp32 / bf16 | last-epoch training adversarial acc. fp32 / bf16 |",
             "| --- | ---: | " + " | ".join("---: | ---:" for _ in prec["metrics"]) + " | ---: | ---: |"]
    for e in prec["methods"]:
        for seed, row in e["per_seed"].items():
            lines.append(f"| {e['method']} | {seed} | " + " | ".join(
                f"{_ci(row['fp32'][m])} | {_ci(row['bf16'][m])}" for m in prec["metrics"]) +
                f" | {row['fp32']['train_loss']:.4f} / {row['bf16']['train_loss']:.4f} | "
                f"{row['fp32']['train_adv_acc']:.2f} / {row['bf16']['train_adv_acc']:.2f} |")
    lines += ["", "| method | seeds | " + " | ".join(f"{metric[m]}: bf16 − fp32 pooled per image [90 % CI]"
                                                        for m in prec["metrics"]) + " | decision | default under `auto` |",
              "| --- | --- | " + " | ".join("---:" for _ in prec["metrics"]) + " | --- | --- |"]
    for e in prec["methods"]:
        d = e["decision"]
        cells = []
        for m in prec["metrics"]:
            r = d["metrics"][m]
            if "equivalence" in r:
                q = r["equivalence"]
                cells.append(f"{q['estimate']:+.2f} [{q['ci90'][0]:+.2f}, {q['ci90'][1]:+.2f}]")
            else:
                cells.append(f"{r['n_seeds']} seed(s)")
        lines.append(f"| {e['method']} | {','.join(map(str, e['seeds'])) or 'none'} | " + " | ".join(cells) +
                     f" | {d['verdict']} | {'bf16' if d['bf16_default'] else 'fp32'} |")
    lines.append("| every other method | none | " + " | ".join("not measured" for _ in prec["metrics"]) +
                 " | not measured | fp32 |")
    return "\n".join(lines)


def render_verdicts(summary: dict[str, Any]) -> str:
    """One row per paper claim tested on real CIFAR-10 and its verdict (the block in docs/notebooks.md)."""
    rows = ["| claim (source) | verdict at CPU scale |", "| --- | --- |"]
    mse = summary.get("mse_perception")
    for p in (mse or {}).get("pairs", []):
        rows.append(f"| failure MSE vs success MSE, {p['pair']} (RPAT, Fig. 2: {p['paper']}) | {p['verdict']} |")
        rows.append(f"| flipped MSE vs survived MSE among clean-correct images, {p['pair']} (RPAT, Fig. 2: "
                    f"{p['paper'].replace('failure', 'flipped').replace('success', 'survived')}) | "
                    f"{p['clean_correct']['verdict']} |")
    for part in ("always_failed_overlap", "boundary_samples"):
        for c in (summary.get(part) or {}).get("checks", []):
            rows.append(f"| {str(c['claim']).replace('|', '/')} ({c['source']}) | {c['verdict']} |")
    rows += verdict_rows(summary.get("rpat"), summary.get("round2"))
    return "\n".join(rows)


def _replace_block(readme: str, block: tuple[str, str], body: str, name: str) -> str:
    start, end = block
    if start not in readme or end not in readme:
        raise ValueError(f"{name} has no block between {start!r} and {end!r}")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def render_benchmarks_block(summary: dict[str, Any], readme: str) -> str:
    """``readme`` (benchmarks/README.md) with its precision-parity block replaced by :func:`render_precision`."""
    return _replace_block(readme, PRECISION_BLOCK, render_precision(summary), "benchmarks/README.md")


def render_readme_block(summary: dict[str, Any], readme: str) -> str:
    """``readme`` (docs/notebooks.md) with its verdict block replaced by :func:`render_verdicts`."""
    return _replace_block(readme, VERDICT_BLOCK, render_verdicts(summary), "docs/notebooks.md")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["collect", "collect-round2", "render"])
    p.add_argument("--outputs", action="append", default=None,
                   help="an outputs folder of the runs (repeat for several checkouts; default outputs/cpu, and "
                        "outputs/cpu/round2/runs for collect-round2)")
    args = p.parse_args(argv)
    if args.step == "collect":
        for outputs in args.outputs or ["outputs/cpu"]:
            collect(Path(outputs))
    if args.step == "collect-round2":
        for outputs in args.outputs or ["outputs/cpu/round2/runs"]:
            copied = collect_round2(Path(outputs), HERE / "round2")
            print(f"copied {len(copied)} finished runs from {outputs}: {', '.join(copied) or 'none'}")
            made = HERE / "round2" / "made_by.json"
            if copied:  # the first checkout that made the round keeps it
                made_by = json.loads(made.read_text()) if made.is_file() else {}
                made_by.setdefault("round2", _commit(Path(outputs).resolve().parents[3]))
                made.write_text(json.dumps(made_by, indent=1, sort_keys=True))
    summary = summarise()
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (HERE / "README.md").write_text(render(summary))
    BENCHMARKS_README.write_text(render_benchmarks_block(summary, BENCHMARKS_README.read_text()))
    PROJECT_README.write_text(render_readme_block(summary, PROJECT_README.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

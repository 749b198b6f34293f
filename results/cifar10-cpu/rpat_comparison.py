"""The RPAT comparison on real CIFAR-10 at CPU scale (RPAT, Table 1): both rounds, summarised and rendered.

Every cell (a pair such as PGD-AT+RPAT vs PGD-AT, a checkpoint, an attack) is judged by the RPAT-comparison
experiment's own rule (:func:`atkit.experiments.rpat_comparison.compare_cell`) on the committed run files' per-image
flags, runs paired by seed: per seed the exact McNemar test of the two trained networks
("differs" / "no difference detected"), the per-image paired difference pooled over the seeds as the primary
analysis, Cochran's Q beside it (random effects with the Hartung-Knapp interval when it rejects), the Student-t
interval over the seeds as a sensitivity line, and the minimal detectable effect of the design. The verdict on the
paper's difference is :func:`atkit.experiments.claims.published_difference_verdict`, directional only where RPAT, Table 1
claims a direction (:func:`atkit.experiments.claims.rpat_table1_direction`).

The second round (``round2/``) was designed for power: final checkpoint only, clean and PGD-20 on all 10,000 test
images, APGD-CE+DLR on 2,000 (``eval-apgd2000.json``), seeds 10-13; :func:`collect_round2` copies its small files.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from scipy import stats as scipy_stats

from atkit.experiments.rpat_comparison import compare_cell, paper_differences
from atkit.core.stats import accuracy_record, seed_summary, seeds_needed

RPAT_PAIRS = (("pgd_at", "pgd_at+rpat"), ("trades", "trades+rpat"))
ATTACKS = ("clean", "pgd20", "cw", "apgd")
ATTACK_NAMES = {"clean": "Clean", "pgd20": "PGD-20", "cw": "CW-30", "apgd": "APGD-CE+DLR"}
ROUND2_METHODS = ("pgd_at", "pgd_at+rpat", "trades", "trades+rpat")
ROUND2_SEEDS = (10, 11, 12, 13)
ROUND2_APGD = "eval-apgd2000.json"
ROUND2_COPIED = ("config.yaml", "eval.json", ROUND2_APGD)
ROUND2_COMMANDS = ("python results/cifar10-cpu/round2.py --data data/cifar10-jpeg   # resumable; seeds 10-13, "
                   "4 methods", "python results/cifar10-cpu/build.py collect-round2 --outputs outputs/cpu/round2/runs")


def _yaml(path: Path) -> dict[str, Any]:
    import yaml  # only reading the committed configs needs it

    return yaml.safe_load(path.read_text()) or {}


def _run_record(flags: dict[tuple[str, str, int], dict[str, str]], attacks: tuple[str, ...]) -> dict[str, Any]:
    """The committed runs' per-image flags as the record :mod:`atkit.experiments.rpat_comparison` judges:
    ``flags[checkpoint][method][seed][attack]``."""
    record: dict[str, Any] = {"pairs": [list(p) for p in RPAT_PAIRS], "attacks": list(attacks), "num_classes": 10,
                              "flags": {}}
    for (method, which, seed), per in flags.items():
        record["flags"].setdefault(which, {}).setdefault(method, {})[str(seed)] = dict(per)
    return record


def _cell(record: dict[str, Any], *, method: str, base: str, which: str, attack: str) -> dict[str, Any]:
    """One (pair, checkpoint, attack) cell, judged by the experiment's own rule (its numbers)."""
    return compare_cell(record, base, method, which, attack).numbers


def _accuracy_table(flags_by_run: dict[tuple[str, str, int], dict[str, str]]) -> list[dict[str, Any]]:
    """Per (method, checkpoint): mean ± sd over the seeds of each attack's accuracy, and each seed's with its interval."""
    table = []
    for method in [m for pair in RPAT_PAIRS for m in pair]:
        for which in ("best", "final"):
            seeds = sorted(s for (m, w, s) in flags_by_run if (m, w) == (method, which))
            if not seeds:
                continue
            entry: dict[str, Any] = {"method": method, "which": which, "seeds": seeds}
            for a in ATTACKS:
                per = {str(s): _record(flags_by_run[(method, which, s)][a]) for s in seeds
                       if a in flags_by_run[(method, which, s)]}
                if not per:
                    continue
                s = seed_summary(v["acc"] for v in per.values())
                entry[a] = {"mean": round(s.mean, 2), "sd": None if s.n_seeds < 2 else round(s.sd, 2),
                            "n_seeds": s.n_seeds, "per_seed": per}
            table.append(entry)
    return table


def _record(flags: str) -> dict[str, Any]:
    rec = accuracy_record(flags.count("1"), len(flags))
    return {"acc": round(rec["accuracy"], 2), "ci95": [round(v, 2) for v in rec["ci95"]], "n": rec["n"]}


def summarise_round1(folder: Path) -> Optional[dict[str, Any]]:
    """The first round (``runs/train``: 3 seeds, 2,000 test images, best and final checkpoints, four attacks)."""
    runs: dict[tuple[str, int], Path] = {}
    flags: dict[tuple[str, str, int], dict[str, str]] = {}
    best_epoch: dict[tuple[str, int], Any] = {}
    for run in sorted(folder.glob("*/eval.json")):
        cfg, ev = _yaml(run.parent / "config.yaml"), json.loads(run.read_text())
        key = (cfg["method"], int(cfg.get("seed", 0)))
        runs[key], best_epoch[key] = run.parent, ev.get("best_epoch")
        for which in ("best", "final"):
            if which in ev:
                flags[(key[0], which, key[1])] = ev[which]["per_sample"]
    if not runs:
        return None
    table = _accuracy_table(flags)
    for entry in table:
        if entry["which"] == "best":  # the epoch the trainer's per-epoch PGD-10 check chose, per seed
            entry["best_epoch"] = {str(s): best_epoch[(entry["method"], s)] for s in entry["seeds"]}
    diffs, cells, record = paper_differences(), [], _run_record(flags, ATTACKS)
    for base, method in RPAT_PAIRS:
        if not any(m == method and (base, s) in runs for (m, s) in runs):
            continue
        for which in ("best", "final"):
            for attack in ATTACKS:
                cells.append(_cell(record, method=method, base=base, which=which, attack=attack))
    final = [c for c in cells if c["which"] == "final" and c["pooled"]["df"] >= 1]
    q, df = sum(c["pooled"]["q"] for c in final), sum(c["pooled"]["df"] for c in final)
    return {"table": table, "cells": cells, "n_images": cells[0]["n"] if cells else None,
            "heterogeneity_final": {"q": round(q, 2), "df": df, "p_value": round(float(scipy_stats.chi2.sf(q, df)), 4),
                                    "cells": len(final)},
            "paper": {m: diffs.get((m, b)) for b, m in RPAT_PAIRS}}


# ------------------------------------------------------------------------------------------------ round 2
#: An absolute path to a data folder (``/anything/data/cifar10-jpeg``), kept from ``data/`` on: what a user types.
_ABSOLUTE_DATA_PATH = re.compile(r"(?<![\w.~])/[^\s\"',]*?/(data/[\w.-]+)")


def _portable_paths(text: str, checkout: str) -> str:
    """``text`` with the paths of the machine that made the runs made relative: the checkout's own prefix removed
    (run folders, parameter files, the program), a data folder from ``data/`` on."""
    return _ABSOLUTE_DATA_PATH.sub(r"\1", text.replace(checkout, ""))


def collect_round2(outputs: Path, into: Path) -> list[str]:
    """Copy the small files of every finished second-round run ``<method>-s<seed>`` under ``outputs`` (config.yaml,
    eval.json, eval-apgd2000.json, metrics.json without its run_dir) to ``into/runs/``, and ``times.jsonl``; return
    the names copied. A run missing one of its files is left out (it is still running or was stopped). Paths of the
    machine that made the runs are made relative (:func:`_portable_paths`)."""
    copied = []
    for method in ROUND2_METHODS:
        for seed in ROUND2_SEEDS:
            run = outputs / f"{method}-s{seed}"
            if not all((run / f).is_file() for f in (*ROUND2_COPIED, "metrics.json")):
                continue
            dst = into / "runs" / run.name
            dst.mkdir(parents=True, exist_ok=True)
            checkout = str(outputs.resolve().parents[3]) + "/"  # <checkout>/outputs/cpu/round2/runs
            for name in ROUND2_COPIED:
                (dst / name).write_text(_portable_paths((run / name).read_text(), checkout))
            metrics = json.loads((run / "metrics.json").read_text())
            (dst / "metrics.json").write_text(_portable_paths(json.dumps(
                {k: v for k, v in metrics.items() if k != "run_dir"}, indent=1), checkout))
            copied.append(run.name)
    if (outputs / "times.jsonl").is_file():
        into.mkdir(parents=True, exist_ok=True)
        shutil.copy2(outputs / "times.jsonl", into / "times.jsonl")
    return copied


def summarise_round2(folder: Path) -> Optional[dict[str, Any]]:
    """The second round (``round2/runs``): per pair, clean and PGD-20 on 10,000 images and APGD-CE+DLR on 2,000,
    pooled over the seeds both arms ran, with what this design can resolve."""
    runs: dict[tuple[str, int], Path] = {}
    for cfg_path in sorted((folder / "runs").glob("*/config.yaml")):
        cfg = _yaml(cfg_path)
        runs[(cfg["method"], int(cfg.get("seed", 0)))] = cfg_path.parent
    if not runs:
        return None
    flags: dict[tuple[str, str, int], dict[str, str]] = {}
    for (method, seed), run in runs.items():
        per = dict(json.loads((run / "eval.json").read_text())["final"]["per_sample"])
        per["apgd"] = json.loads((run / ROUND2_APGD).read_text())["per_sample"]["apgd"]
        flags[(method, "final", seed)] = per
    table = _accuracy_table(flags)
    cells, record = [], _run_record(flags, ("clean", "pgd20", "apgd"))
    for base, method in RPAT_PAIRS:
        if not any(m == method and (base, s) in runs for (m, s) in runs):
            continue
        for attack in ("clean", "pgd20", "apgd"):
            cell = _cell(record, method=method, base=base, which="final", attack=attack)
            paper = cell["paper_difference"]
            if paper is not None and paper != 0:
                needed = seeds_needed(paper, cell["pooled"]["per_image_variance"], cell["n"])
                cell["resolution"] = {"resolvable": abs(paper) >= cell["mde80"], "seeds_needed": needed,
                                      "at_n_images": cell["n"]}
            cells.append(cell)
    times = folder / "times.jsonl"
    cpu = None
    if times.is_file():
        steps = [json.loads(line) for line in times.read_text().splitlines() if line.strip()]
        cpu = {kind: round(sum(s["cpu_s"] for s in steps if s["step"].startswith(kind)) / 3600, 2)
               for kind in ("train", "apgd")}
    made = folder / "made_by.json"
    return {"table": table, "cells": cells, "cpu_hours": cpu,
            "made_by": json.loads(made.read_text()).get("round2") if made.is_file() else None}


# ------------------------------------------------------------------------------------------------- render
def _pm(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _p(p: float) -> str:
    """A p-value stored to 4 decimals: ``"<1e-4"`` when it rounded to 0."""
    return "<1e-4" if p == 0 else f"{p:.2g}"


def _ci(v: list) -> str:
    return f"[{v[0]:+.2f}, {v[1]:+.2f}]"


def _accuracy_lines(table: list[dict[str, Any]], attacks: tuple[str, ...]) -> list[str]:
    lines = ["| method | checkpoint | seeds | " + " | ".join(ATTACK_NAMES[a] for a in attacks) + " |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in attacks) + " |"]
    for e in table:
        cells = []
        for a in attacks:
            s = e.get(a)
            if s is None:
                cells.append("n/a")
            elif s["n_seeds"] == 1:
                only = next(iter(s["per_seed"].values()))
                cells.append(f"{only['acc']:.2f} [{only['ci95'][0]:.1f}, {only['ci95'][1]:.1f}]")
            else:
                cells.append(f"{s['mean']:.2f} ± {s['sd']:.2f}")
        which = e["which"]
        if e.get("best_epoch"):
            epochs = [str(v) for v in e["best_epoch"].values()]
            which += f" (epoch{'s' if len(epochs) > 1 else ''} {', '.join(epochs)})"
        lines.append(f"| {e['method']} | {which} | {','.join(map(str, e['seeds']))} | " + " | ".join(cells) + " |")
    return lines


def _pooled_lines(cells: list[dict[str, Any]]) -> list[str]:
    lines = ["| comparison | checkpoint | attack | per-seed differences | pooled per image [95 % CI] | Cochran's Q (df, p) "
             "| t over seeds [95 % CI] (sensitivity) | MDE, 80 % power | paper difference (claimed direction) | "
             "verdict |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for c in cells:
        p, o = c["pooled"], c["over_seeds"]
        pooled = f"{p['estimate']:+.2f} {_ci(p['ci95'])}" + (" (random effects, Hartung-Knapp)" if p["heterogeneous"]
                                                            else "")
        q = "n/a" if p["df"] < 1 else f"{p['q']:.2f} ({p['df']}, {_p(p['q_p_value'])})"
        t = "n/a" if o is None else f"{o['difference']:+.2f} {_ci(o['ci95'])}"
        direction = {"positive": "gain claimed", None: "no direction claimed"}[c["claimed_direction"]]
        paper = "n/a" if c["paper_difference"] is None else f"{c['paper_difference']:+.2f} ({direction})"
        per_seed = " / ".join(f"{d['difference']:+.2f}" for d in c["per_seed"])
        lines.append(f"| {c['method']} vs {c['base']} | {c['which']} | {ATTACK_NAMES[c['attack']]} | {per_seed} | "
                     f"{pooled} | {q} | {t} | {c['mde80']:.2f} | {paper} | {c['verdict']} |")
    return lines


def render_round1(rp: Optional[dict[str, Any]]) -> str:
    if not rp:
        return "Not run yet."
    lines = [f"Accuracy in % on {rp['n_images']:,} class-stratified test images, mean ± sd over the seeds run.", "",
             *_accuracy_lines(rp["table"], ATTACKS), "",
             "One trained network per arm and seed: the exact McNemar test on the same images says whether these two "
             "networks differ, not whether the method works (difference with its Newcombe paired interval).", "",
             "| comparison | checkpoint | seed | attack | difference [95 % CI] | p | the two networks |",
             "| --- | --- | ---: | --- | ---: | ---: | --- |"]
    for c in rp["cells"]:
        for s in c["per_seed"]:
            lines.append(f"| {c['method']} vs {c['base']} | {c['which']} | {s['seed']} | {ATTACK_NAMES[c['attack']]} | "
                         f"{s['difference']:+.2f} {_ci(s['ci95'])} | {s['p_value']:.3g} | {s['verdict']} |")
    h = rp["heterogeneity_final"]
    lines += ["", "Over the seeds (primary: the per-image paired differences pooled over the seeds, inverse-variance "
              "weights; random effects with the Hartung-Knapp interval where Cochran's Q rejects at 0.10; the "
              "Student-t interval over the seeds' accuracy differences as a sensitivity line; MDE: the smallest "
              "pooled difference this design detects with 80 % power at 5 %, no between-seed variance). Paper "
              "difference: RPAT, Table 1 (ResNet-18, best checkpoint; its AA against APGD-CE+DLR here).", "",
              *_pooled_lines(rp["cells"]), "",
              f"Heterogeneity summed over the {h['cells']} final-checkpoint cells (2 pairs × 4 attacks, 2 df each; "
              f"descriptive, the cells share their networks): Q = {h['q']:.1f} on {h['df']} df, p = {h['p_value']:.2f}."]
    return "\n".join(lines)


def render_rounds_compared(r1: Optional[dict[str, Any]], r2: Optional[dict[str, Any]]) -> list[str]:
    """Each final-checkpoint verdict of the first round beside the second round's, with both pooled intervals and
    the ratio of their widths (what the second round's design bought), and whether the verdict changed."""
    if not r1 or not r2:
        return []
    first = {(c["method"], c["attack"]): c for c in r1["cells"] if c["which"] == "final"}
    lines = ["The two rounds side by side (final checkpoints; each verdict before \"at this scale\"):", "",
             "| comparison | attack | first round [95 % CI] | second round [95 % CI] | CI width, second / first | "
             "verdict, first round | verdict, second round | changed |", "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for c in r2["cells"]:
        old = first.get((c["method"], c["attack"]))
        if old is None:
            continue

        def cell(x: dict[str, Any]) -> str:
            low, high = x["pooled"]["ci95"]
            return f"{_pm(x['pooled']['estimate'])} [{_pm(low)}, {_pm(high)}] ({len(x['seeds'])} × {x['n']:,})"

        def words(x: dict[str, Any]) -> str:
            return x["verdict"].split(" at this scale")[0]

        ratio = ((c["pooled"]["ci95"][1] - c["pooled"]["ci95"][0])
                 / (old["pooled"]["ci95"][1] - old["pooled"]["ci95"][0]))
        lines.append(f"| {c['method']} vs {c['base']} | {ATTACK_NAMES[c['attack']]} | {cell(old)} | {cell(c)} | "
                     f"{ratio:.2f} | {words(old)} | {words(c)} | {'yes' if words(old) != words(c) else 'no'} |")
    return lines


def render_round2(r2: Optional[dict[str, Any]], r1: Optional[dict[str, Any]] = None) -> str:
    """The second round's tables (accuracies, pooled differences, what the design resolves), beside the first
    round's verdicts when ``r1`` is given."""
    if not r2:
        return "Not run yet. Commands:\n\n```bash\n" + "\n".join(ROUND2_COMMANDS) + "\n```"
    cells = r2["cells"]
    lines = ["Final checkpoints; clean and PGD-20 on all 10,000 test images, APGD-CE+DLR on 2,000 class-stratified "
             "ones; accuracy in %, mean ± sd over the seeds run.", "",
             *_accuracy_lines(r2["table"], ("clean", "pgd20", "apgd")), "",
             "Primary: per-image paired differences pooled over the seeds; Cochran's Q beside it; the t interval over "
             "the seeds as sensitivity; MDE at 80 % power for this design (per-image variance measured here).", "",
             *_pooled_lines(cells), "",
             "What this scale can resolve: a published difference at least the MDE is detectable with 80 % power; "
             "otherwise the seeds it needs at the same number of images (no between-seed variance assumed).", "",
             "| comparison | attack | design (seeds × images) | MDE, 80 % power | paper difference | resolvable here | "
             "seeds needed for it |", "| --- | --- | --- | ---: | ---: | --- | ---: |"]
    for c in cells:
        res = c.get("resolution")
        lines.append(f"| {c['method']} vs {c['base']} | {ATTACK_NAMES[c['attack']]} | {len(c['seeds'])} × "
                     f"{c['n']:,} | {c['mde80']:.2f} | {_pm(c['paper_difference'])} | "
                     + ("n/a | n/a |" if res is None else
                        f"{'yes' if res['resolvable'] else 'no'} | {res['seeds_needed']} × {res['at_n_images']:,} |"))
    compared = render_rounds_compared(r1, r2)
    if compared:
        lines += ["", *compared]
    if r2.get("cpu_hours"):
        hours = sorted(r2["cpu_hours"].items(), key=lambda kv: (kv[0] != "train", kv[0]))  # training first
        lines += ["", "CPU time: " + ", ".join(f"{k} {v:.1f} h" for k, v in hours) + "."]
    if r2.get("made_by"):
        lines += ["", f"The runs were made by atkit at commit `{r2['made_by'][:12]}`."]
    lines += ["", "Commands:", "", "```bash", *ROUND2_COMMANDS, "```"]
    return "\n".join(lines)


def verdict_rows(rp: Optional[dict[str, Any]], r2: Optional[dict[str, Any]]) -> list[str]:
    """The README block's rows for the RPAT comparison: the final-checkpoint cells with a published number."""
    rows = []
    for name, part in (("first round", rp), ("second round", r2)):
        for c in (part or {}).get("cells", []):
            if c["which"] == "final" and c["paper_difference"] is not None:
                rows.append(f"| {c['method']} vs {c['base']}, {ATTACK_NAMES[c['attack']]}, final checkpoint, {name} "
                            f"(seeds {','.join(map(str, c['seeds']))} × {c['n']:,} images) (RPAT, Table 1: "
                            f"{c['paper_difference']:+.2f}) | {c['verdict']} |")
    return rows

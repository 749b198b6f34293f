"""The second real-data round of the RPAT comparison: train and evaluate every (method, seed), resumably.

    python results/cifar10-cpu/round2.py --data data/cifar10-jpeg            # all of it, one run after another
    python results/cifar10-cpu/round2.py --data data/cifar10-jpeg --seeds 11 13 --dry-run

Each (method, seed) is one run folder ``<runs>/<method>-s<seed>`` made by ``atkit train`` from
``parameters/cpu/round2/<method>_cifar10_small_cnn.yaml`` (final checkpoint only; clean and PGD-20 on all 10,000
test images), then ``atkit eval`` adds APGD-CE+DLR on 2,000 class-stratified test images (``eval-apgd2000.json``).
Every step is skipped when its file is complete, an interrupted training run is resumed from its ``last.pt``, so
the script can be killed and started again at any point. Each process runs on one thread (``OMP_NUM_THREADS=1``:
several such queues share a small machine without oversubscribing it), and the CPU time of every step is
appended to ``<runs>/times.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("pgd_at", "pgd_at+rpat", "trades", "trades+rpat")
SEEDS = (10, 11, 12, 13)
APGD_N = 2000
APGD_FILE = f"eval-apgd{APGD_N}.json"


def _config(method: str) -> Path:
    return ROOT / "parameters" / "cpu" / "round2" / f"{method}_cifar10_small_cnn.yaml"


def _status(run: Path) -> str:
    try:
        return json.loads((run / "metrics.json").read_text()).get("status", "unknown")
    except (OSError, ValueError):
        return "missing"


def _evaluated(run: Path) -> bool:
    try:
        final = json.loads((run / "eval.json").read_text())["final"]
        return {"clean", "pgd20"} <= set(final["per_sample"]) and final["n"] == 10000
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _apgd_done(run: Path) -> bool:
    try:
        return len(json.loads((run / APGD_FILE).read_text())["per_sample"]["apgd"]) == APGD_N
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _run(cmd: list[str], log: Path, step: str, times: Path, dry: bool) -> None:
    print(("would run: " if dry else "running: ") + " ".join(cmd), flush=True)
    if dry:
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    with log.open("a") as out:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with times.open("a") as f:
        f.write(json.dumps({"step": step, "exit": code, "cpu_s": round(cpu, 1),
                            "wall_s": round(time.time() - began, 1)}) + "\n")
    if code != 0:
        raise SystemExit(f"{step} failed with exit status {code}; see {log}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 ImageFolder copy (train/ and test/ inside)")
    p.add_argument("--runs", default="outputs/cpu/round2/runs", help="folder of the run folders (project-relative)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    runs = (ROOT / args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    times, py = runs / "times.jsonl", [sys.executable, "-m", "atkit"]
    data = ["--set", "dataset=folder", "--set", f"data.root={Path(args.data).resolve()}"]
    for seed in args.seeds:  # seed-major: stopping early still leaves every method with the same seeds
        for method in args.methods:
            name = f"{method}-s{seed}"
            run, log = runs / name, runs / f"{name}.log"
            status = _status(run)
            if status == "finished" and _evaluated(run):
                pass
            elif (run / "checkpoints" / "last.pt").is_file():
                _run(py + ["train", "--resume", str(run), "--quiet"], log, f"train {name} (resume)", times,
                     args.dry_run)
            else:
                if run.exists():  # created, killed before its first checkpoint: keep it aside, never delete it
                    run.rename(run.with_name(f"{name}.stale-{int(time.time())}"))
                _run(py + ["train", str(_config(method)), "--out-dir", str(runs), "--set", f"seed={seed}",
                           "--set", f"name={name}", "--quiet", *data], log, f"train {name}", times, args.dry_run)
            if not _apgd_done(run):
                _run(py + ["eval", str(run), "--attacks", "apgd", "--n", str(APGD_N), "--out", str(run / APGD_FILE),
                           "--quiet", "--device", "cpu"], log, f"apgd {name}", times, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

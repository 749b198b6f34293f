"""Helpers of ``benchmarks/gpu_suite.sh``: time AutoAttack on a trained run, and merge the suite's JSON files.

``--run RUN_JSON_LINE --n N``: load the run's best (else last) checkpoint, take ``N`` class-stratified test
images, run AutoAttack (``standard``, or the listed attacks with ``--n-iter`` iterations for the dry form) in
exact fp32 and write its time and accuracy, extrapolated linearly to 10,000 images.
``--summarise OUT``: read every JSON the suite wrote into ``OUT``, check the targets of ``benchmarks/README.md``,
write ``OUT/gpu_suite.json`` and print a one-screen summary.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from atkit.attacks.autoattack import run_autoattack  # noqa: E402
from atkit.config import RunConfig  # noqa: E402
from atkit.data import load_dataset  # noqa: E402
from atkit.fast import exact_fp32  # noqa: E402
from atkit.train import load_model, to_float_images  # noqa: E402
from atkit.utils import atomic_write_json, resolve_device  # noqa: E402

# benchmarks/README.md, "Targets" (one H200).
TARGETS = {"resnet18_epoch_s": 6.0, "resnet18_speedup": 3.0, "wrn34_10_epoch_s": 90.0, "aa_10k_s": 300.0}


def time_autoattack(run_dir: Path, n: int, attacks: str, n_iter: int, device: torch.device) -> dict[str, Any]:
    config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    model = load_model(run_dir, device=device)
    dataset = load_dataset(config.dataset, **config.data)
    x, y, _ = dataset.eval_subset(min(n, len(dataset.test_y)))
    x, y = to_float_images(x), y
    kw: dict[str, Any] = ({"version": "standard"} if attacks == "standard" else
                          {"version": "custom", "attacks": attacks.split(","), "n_restarts": 1})
    if n_iter:
        kw["n_iter"] = n_iter
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    with exact_fp32(True):
        result = run_autoattack(model, x, y, eps=config.threat_model().eps, norm=config.threat_model().norm,
                                batch_size=1000 if device.type == "cuda" else 256, device=device, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return {"images": len(y), "seconds": seconds, "seconds_10k_extrapolated": seconds * 10000 / len(y),
            "clean_acc": result.per_attack.get("clean"), "robust_acc": result.accuracy, "config": result.config,
            "attacks": attacks, "n_iter": n_iter or "official", "run_dir": str(run_dir)}


def summarise(out: Path, wall_seconds: float, dry: bool) -> dict[str, Any]:
    def read(name: str) -> dict[str, Any]:
        path = out / name
        return json.loads(path.read_text()) if path.is_file() else {}

    r18, wrn, aa, parity = read("train_resnet18.json"), read("train_wrn34_10.json"), read("aa.json"), read("parity.json")
    atkit_r18 = r18.get("train", {}).get("atkit", {})
    figures = {
        "resnet18_epoch_s": atkit_r18.get("epoch_seconds_estimate"),
        "resnet18_speedup": atkit_r18.get("speedup_vs_reference"),
        "reference_resnet18_epoch_s": r18.get("train", {}).get("reference", {}).get("epoch_seconds_estimate"),
        "wrn34_10_epoch_s": wrn.get("train", {}).get("atkit", {}).get("epoch_seconds_estimate"),
        "aa_10k_s": aa.get("seconds_10k_extrapolated"),
    }
    checks = {}
    for key, bound in TARGETS.items():
        value = figures.get(key)
        ok = None if value is None or dry else (value >= bound if key.endswith("speedup") else value <= bound)
        checks[key] = {"value": value, "target": (">= " if key.endswith("speedup") else "<= ") + str(bound), "met": ok}
    summary = {
        "benchmark": "gpu_suite", "dry": bool(dry),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": r18.get("machine"), "wall_seconds": wall_seconds, "figures": figures, "targets": checks,
        "aa": aa, "parity_summary": parity.get("summary"),
        "parts": {"train_resnet18": r18, "train_wrn34_10": wrn, "parity": parity},
    }
    atomic_write_json(out / "gpu_suite.json", summary)
    lines = [f"gpu_suite{' (dry form: CPU, tiny sizes; no target is judged)' if dry else ''}: "
             f"{wall_seconds:.0f} s wall, results in {out / 'gpu_suite.json'}"]
    for key, entry in checks.items():
        value = entry["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = {True: "met", False: "MISSED", None: "not judged"}[entry["met"]]
        lines.append(f"  {key:22s} {shown:>10s}   target {entry['target']:8s} {verdict}")
    if aa:
        lines.append(f"  AutoAttack ({aa['attacks']}) on {aa['images']} images: {aa['seconds']:.1f} s, "
                     f"robust {aa['robust_acc']:.1f} % (clean {aa['clean_acc']} %)")
    for metric, entry in (parity.get("summary") or {}).items():
        lines.append(f"  parity {metric}: {json.dumps(entry, default=str)[:110]}")
    print("\n".join(lines))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="the JSON line `atkit train` printed (run_dir, status)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--attacks", default="standard", help="standard, or comma-separated AutoAttack attack names")
    p.add_argument("--n-iter", type=int, default=0, help="override the iterations (0: official)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out")
    p.add_argument("--summarise", metavar="OUT")
    p.add_argument("--wall-seconds", type=float, default=0.0)
    p.add_argument("--dry", type=int, default=0)
    args = p.parse_args(argv)
    if args.summarise:
        summarise(Path(args.summarise), args.wall_seconds, bool(args.dry))
        return 0
    run_dir = Path(json.loads(args.run)["run_dir"])
    result = time_autoattack(run_dir, args.n, args.attacks, args.n_iter, resolve_device(args.device))
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Accuracy parity of the fast path (bf16 autocast, channels_last) with the exact fp32 path.

For each seed, two short PGD-AT runs with the same data, schedule, attack and number of steps differ only in
``precision``/``channels_last``; both are evaluated the same way at the end (exact fp32: clean and PGD-20
accuracy on the first ``--eval-n`` test images). Run-to-run noise is what the seeds give: the parity claim
is that the fast path's mean is within two standard errors of the difference of the two means,

    |mean(fast) - mean(fp32)| <= 2 * sqrt(var(fast)/k + var(fp32)/k)   (k seeds, sample variances),

and, per seed, the two paths' numbers are listed side by side. The CPU form (small_cnn on the synthetic data,
bf16 autocast on the CPU) checks the mechanics in minutes; the GPU form is the real measurement::

    python benchmarks/parity.py --device cpu --model small_cnn --fast-precision bf16 --n-train 1024 \\
        --batch-size 64 --epochs 3 --schedule constant --attack-steps 5 --seeds 0,1,2 --eval-n 300 \\
        --out benchmarks/results/parity-cpu-<date>.json
    python benchmarks/parity.py --device cuda --model resnet18 --dataset folder --root data/cifar10-jpeg \\
        --epochs 10 --seeds 0,1,2 --eval-n 10000 --out benchmarks/results/parity-h200-resnet18.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_at import machine_info  # noqa: E402
from atkit.core.fast import describe  # noqa: E402
from atkit.core.stats import seed_difference  # noqa: E402
from atkit.training.trainer import Trainer  # noqa: E402
from atkit.data import to_float_images  # noqa: E402
from atkit.core.utils import ConfigError, atomic_write_json, resolve_device  # noqa: E402

METRICS = ("clean", "pgd20")


def run_once(args: argparse.Namespace, device: torch.device, out_dir: str, seed: int, fast: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        method="pgd_at", model=args.model, batch_size=args.batch_size, schedule=args.schedule, epochs=args.epochs,
        device=str(device), seed=seed, out_dir=out_dir, name=f"{'fast' if fast else 'fp32'}-s{seed}",
        precision=args.fast_precision if fast else "fp32", channels_last=args.fast_channels_last if fast else False,
        threat={"steps": args.attack_steps}, max_steps_per_epoch=args.max_steps,
        eval={"every": args.epochs, "n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"]})
    if args.lr is not None:
        cfg["lr"] = args.lr
    if args.dataset == "synthetic":
        cfg.update(dataset="synthetic", data={"n_train": args.n_train, "n_test": args.eval_n})
    else:
        cfg.update(dataset="folder", data={"root": args.root})
    trainer = Trainer.new(cfg, progress=False)
    began = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - began
    n = min(args.eval_n, len(trainer.dataset.test_y))
    x, y = to_float_images(trainer.dataset.test_x[:n]), trainer.dataset.test_y[:n]
    # The same evaluation for both paths: exact fp32 (eval.precision defaults to fp32), same attack seed.
    result = trainer.evaluate_sharded(trainer.model, x, y, attacks=list(METRICS), threat=trainer.config.threat_model(),
                                      batch_size=args.eval_batch_size, device=trainer.device,
                                      num_classes=trainer.num_classes)
    last = trainer.history[-1]
    return {"seed": seed, "path": "fast" if fast else "fp32", "fast_path": describe(trainer.train_model),
            "train_seconds": train_seconds, "train_loss": last.get("train_loss"),
            "train_adv_acc": last.get("train_adv_acc"), "eval_n": n,
            **{f"test_{k}_acc": result.accuracy[k] for k in METRICS}}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in (f"test_{k}_acc" for k in METRICS):
        fast = [r[metric] for r in rows if r["path"] == "fast"]
        exact = [r[metric] for r in rows if r["path"] == "fp32"]
        k = min(len(fast), len(exact))
        entry: dict[str, Any] = {"fast_mean": statistics.fmean(fast), "fp32_mean": statistics.fmean(exact),
                                 "per_seed_difference": [f - e for f, e in zip(fast, exact)]}
        entry["difference"] = entry["fast_mean"] - entry["fp32_mean"]
        if k >= 2 and len(fast) == len(exact):  # both paths ran on the same seeds
            entry["fast_std"], entry["fp32_std"] = statistics.stdev(fast), statistics.stdev(exact)
            d = seed_difference(fast, exact)  # a seed-noise screen; the decision is bf16_parity_decision's TOST
            entry["two_standard_errors"] = d.two_standard_errors
            entry["within_noise"] = d.within_noise
        out[metric] = entry
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", choices=["synthetic", "folder"], default="synthetic")
    p.add_argument("--root")
    p.add_argument("--n-train", type=int, default=5000, help="synthetic training images")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: the schedule's (0.1)")
    p.add_argument("--schedule", default="pang110", help="scaled to --epochs (milestones keep their fractions)")
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (smoke runs)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fast-precision", default="auto", choices=["auto", "bf16"],
                   help="fast path precision ('auto' is fp32 on the CPU: use bf16 there)")
    p.add_argument("--fast-channels-last", default="auto", type=lambda v: {"true": True, "false": False}.get(v, v))
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--out")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if args.dataset == "folder" and not args.root:
        raise ConfigError("--dataset folder needs --root")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    given = list(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "benchmark": "fast-vs-fp32-accuracy-parity",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/parity.py"] + [shlex.quote(a) for a in given]),
        "machine": machine_info(device),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "criterion": "|mean(fast) - mean(fp32)| <= 2 * sqrt(var_fast/k + var_fp32/k) over k seeds",
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="atkit-parity-") as tmp:
        for seed in seeds:
            for fast in (False, True):
                row = run_once(args, device, tmp, seed, fast)
                results["runs"].append(row)
                print(f"seed {seed} {row['path']:>4}: clean {row['test_clean_acc']:.2f}  pgd20 "
                      f"{row['test_pgd20_acc']:.2f}  ({row['train_seconds']:.1f} s, {row['fast_path']})", flush=True)
    results["summary"] = summarise(results["runs"])
    for metric, entry in results["summary"].items():
        verdict = entry.get("within_noise")
        print(f"{metric}: fast {entry['fast_mean']:.2f}  fp32 {entry['fp32_mean']:.2f}  diff {entry['difference']:+.2f}"
              + (f"  (2 s.e. {entry['two_standard_errors']:.2f}: {'within' if verdict else 'OUTSIDE'} noise)"
                 if verdict is not None else ""))
    if args.out:
        atomic_write_json(args.out, results)
        print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

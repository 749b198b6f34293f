"""Relative error of training-loss terms under bf16 autocast against exact fp32, on one batch.

For a model (randomly initialised, or a trained run's checkpoint) and ``--n`` class-stratified training images,
one PGD attack (fp32) gives ``x'``; then CE on ``x'``, the RPAT term (released-code scale, alpha = 0.5) and
TRADES' KL are computed once with the exact fp32 forward and once with atkit's bf16-autocast forward
(``atkit.core.fast.AutocastModel``), and ``|bf16 - fp32| / |fp32|`` is reported per term. The "start" and "end of
training" figures of benchmarks/README.md come from a fresh model and from a trained checkpoint.

    python benchmarks/precision_terms.py --dataset folder --root data/cifar10-jpeg --model small_cnn \
        [--checkpoint RUN_DIR] --out benchmarks/results/precision-terms-<label>.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_at import machine_info  # noqa: E402
from atkit.attacks import pgd  # noqa: E402
from atkit.data import load_dataset  # noqa: E402
from atkit.core.fast import AutocastModel, exact_fp32  # noqa: E402
from atkit.methods.rpat import rpat_term  # noqa: E402
from atkit.models import build_model  # noqa: E402
from atkit.core.utils import file_sha256  # noqa: E402
from atkit.training.checkpoints import load_model, resolve_checkpoint  # noqa: E402
from atkit.data import to_float_images  # noqa: E402
from atkit.core.utils import atomic_write_json  # noqa: E402


def weights_record(checkpoint: Optional[str], seed: int) -> dict[str, Any]:
    """What the terms were measured on: a fresh model's seed, or the checkpoint's run name, file and SHA-256
    (the run name rather than the machine's path, so the record is portable)."""
    if not checkpoint:
        return {"fresh": True, "seed": seed}
    path = resolve_checkpoint(checkpoint)
    return {"run": path.parent.parent.name, "file": path.name, "sha256": file_sha256(path)}


def terms(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The loss terms from train-mode forwards (as in training), without parameter updates."""
    with torch.no_grad():
        z, z_adv = model(x), model(x_adv)
        z_mid = model(x + 0.5 * (x_adv - x))
        return {"ce_adv": F.cross_entropy(z_adv, y).item(),
                "rpat_term": rpat_term(z, z_mid, z_adv, 0.5).item(),
                "trades_kl": F.kl_div(F.log_softmax(z_adv, 1), F.softmax(z, 1), reduction="batchmean").item()}


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--root")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--checkpoint", help="a run folder or .pt (default: a fresh model, seed --seed)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    data = {"root": args.root} if args.root else {}
    ds = load_dataset(args.dataset, **data)
    torch.manual_seed(args.seed)
    model = (load_model(args.checkpoint) if args.checkpoint else
             build_model(args.model, num_classes=ds.num_classes))
    x, y, _ = ds.eval_subset(args.n, split="train", seed=args.seed)
    x = to_float_images(x)
    with exact_fp32(True):
        x_adv = pgd(model.eval(), x, y, eps=8 / 255, step_size=2 / 255, steps=10, random_start="uniform")
        model.train()
        state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats are restored below
        fp32 = terms(model, x, x_adv, y)
        model.load_state_dict(state)
        bf16 = terms(AutocastModel(model, dtype=torch.bfloat16), x, x_adv, y)
        model.load_state_dict(state)
    rel = {k: abs(bf16[k] - fp32[k]) / max(abs(fp32[k]), 1e-12) for k in fp32}
    result = {"benchmark": "precision-terms", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/precision_terms.py", *(argv or sys.argv[1:])]),
              "machine": machine_info(torch.device("cpu")), "device": "cpu", "model": args.model,
              "weights": weights_record(args.checkpoint, args.seed), "dataset": ds.name, "n": len(y),
              "fp32": fp32, "bf16": bf16, "relative_error": rel}
    print(json.dumps({"weights": result["weights"], "relative_error": rel}))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Throughput of PGD-10 adversarial training and of evaluation: a plain PyTorch loop against atkit's path.

In one process, on the same data and the same initial model, this times

* ``reference``: the loop as the released AT scripts write it -- ``torch.utils.data.DataLoader`` over the
  images served as PIL images (exactly as ``torchvision.datasets.CIFAR10.__getitem__`` does) through
  ``torchvision.transforms`` ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor``, fp32,
  eager, PGD-10 whose every step calls ``loss.backward()`` (filling parameter gradients too, cleared by
  ``model.zero_grad()``), then the training step, with ``loss.item()`` / accuracy ``.item()`` book-keeping
  per step;
* ``atkit``: the real :class:`atkit.train.Trainer` epoch (``train_epoch``) with method ``pgd_at``: data on the
  device with on-device augmentation, input-only attack gradients, no host synchronisation inside the
  step, and the fast path of :mod:`atkit.fast` (``--precision``, ``--channels-last``, ``--compile``);
* ``atkit_fp32``: the same trainer on the exact fp32 path (``precision: fp32``, ``channels_last: false``),
  which separates what the data path and the attack gain from what bf16 gains (GPU only by default).

Warm-up steps are excluded; CUDA is synchronised around every timed region; rows also give the process CPU
time (``process_cpu_seconds``: on a shared CPU it is steadier than wall time; DataLoader workers not included). Images per second and the
ratio to the reference are printed and, with ``--out``, written to JSON with the date, the machine, the
versions and the command. The evaluation part times PGD-20 (atkit, exact fp32 as reported; the reference
loop; atkit bf16 with ``--eval-bf16``) and standard AutoAttack (``--skip-aa`` to leave it out) on the
first ``--eval-n`` test images. AutoAttack's time depends on how many points survive its first attack:
time it on a robust model (``--checkpoint``), not on the few-step model this script trains.

CPU smoke (seconds; the figures check that it runs, they are no target)::

    python benchmarks/bench_at.py --device cpu --model small_cnn --batch-size 32 --steps 3 --warmup 1 \\
        --eval-n 64 --skip-aa

GPU (one H200; CIFAR-10 JPEG tree unpacked to data/cifar10-jpeg)::

    python benchmarks/bench_at.py --device cuda --model resnet18 --dataset folder --root data/cifar10-jpeg \\
        --batch-size 128 --steps 0 --eval-n 10000 --checkpoint outputs/runs/<robust run> --out benchmarks/results/h200-resnet18.json
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing atkit
    sys.path.insert(0, str(ROOT))

from atkit.fast import describe, eval_model, exact_fp32  # noqa: E402
from atkit.train import Trainer, load_model, to_float_images  # noqa: E402
from atkit.utils import ConfigError, atomic_write_json, resolve_device  # noqa: E402

CIFAR_TRAIN_SIZE = 50000


# ---------------------------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, GPU name, library versions: enough to tell two result files apart."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "device": str(device)}
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return info


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -------------------------------------------------------------------------------------- reference loop
class ArrayImages(torch.utils.data.Dataset):
    """uint8 NCHW images served one by one as PIL images through ``transform``: what
    ``torchvision.datasets.CIFAR10.__getitem__`` does with its in-memory array."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.images = x_uint8.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as CIFAR10.data
        self.targets = [int(v) for v in y]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.targets[i]


def reference_loader(x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool, workers: int,
                     pin_memory: bool) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T

    size = x_uint8.shape[-1]
    ops = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()] if train else []
    dataset = ArrayImages(x_uint8, y, T.Compose(ops + [T.ToTensor()]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=workers,
                                       pin_memory=pin_memory, drop_last=False)


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float,
                  steps: int) -> torch.Tensor:
    """PGD-L-inf as the released scripts write it: uniform start, ``loss.backward()`` each step (parameter
    gradients are computed too and cleared afterwards), ``delta.data`` updates."""
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    delta.data = torch.clamp(x + delta, 0, 1) - x
    delta.requires_grad = True
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        delta.data = torch.clamp(delta + step_size * torch.sign(grad), -eps, eps)
        delta.data = torch.clamp(x + delta.data, 0, 1) - x
        delta.grad.zero_()
    model.zero_grad()
    return (x + delta).detach()


def reference_train(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *, steps: int,
                    warmup: int, eps: float, step_size: float, attack_steps: int, lr: float = 0.1) -> dict[str, Any]:
    """``warmup`` untimed steps, then ``steps`` timed PGD-AT steps (attack in eval mode, as the pgd_at method)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:  # a new epoch (new workers), as the released loops do
            batches = iter(loader)
            return next(batches)

    def step() -> int:
        x, y = next_batch()
        x, y = x.to(device), y.to(device)
        model.eval()
        x_adv = reference_pgd(model, x, y, eps, step_size, attack_steps)
        model.train()
        out = model(x_adv)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats["loss"] += loss.item() * y.size(0)  # the released loops' per-step host sync
        stats["correct"] += (out.max(1)[1] == y).sum().item()
        return y.size(0)

    stats = {"loss": 0.0, "correct": 0}
    for _ in range(warmup):
        step()
    sync(device)
    began, cpu_began = time.perf_counter(), time.process_time()
    seen = sum(step() for _ in range(steps))
    sync(device)
    seconds = time.perf_counter() - began
    return {"steps": steps, "images": seen, "seconds": seconds, "images_per_s": seen / seconds,
            "process_cpu_seconds": time.process_time() - cpu_began}


def reference_eval_pgd(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *, eps: float,
                       step_size: float, steps: int) -> dict[str, Any]:
    model.eval()
    correct = seen = 0
    for x, y in loader:  # untimed warm-up on the first batch
        reference_pgd(model, x.to(device), y.to(device), eps, step_size, 1)
        break
    sync(device)
    began = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        x_adv = reference_pgd(model, x, y, eps, step_size, steps)
        with torch.no_grad():
            correct += (model(x_adv).max(1)[1] == y).sum().item()
        seen += y.size(0)
    sync(device)
    seconds = time.perf_counter() - began
    return {"images": seen, "seconds": seconds, "images_per_s": seen / seconds, "accuracy": 100.0 * correct / seen}


# ----------------------------------------------------------------------------------------------- atkit
def atkit_trainer(args: argparse.Namespace, device: torch.device, out_dir: str, *, exact: bool,
                  n_train: int) -> Trainer:
    cfg: dict[str, Any] = dict(
        method="pgd_at", model=args.model, batch_size=args.batch_size, schedule="constant", lr=0.1, epochs=2,
        device=str(device), seed=args.seed, out_dir=out_dir, name="exact" if exact else "fast",
        precision="fp32" if exact else args.precision,
        channels_last=False if exact else _channels_last_arg(args.channels_last),
        compile=False if exact else _compile_arg(args.compile), threat={"steps": args.attack_steps},
        eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"]})
    if args.dataset == "synthetic":
        cfg.update(dataset="synthetic", data={"n_train": n_train, "n_test": max(args.eval_n, 16),
                                              "seed": args.seed})
    else:
        cfg.update(dataset="folder", data={"root": args.root})
    return Trainer.new(cfg, progress=False)


def time_trainer(trainer: Trainer, device: torch.device, *, steps: int, warmup: int) -> dict[str, Any]:
    """Untimed warm-up epoch of ``warmup`` steps, then a timed ``train_epoch`` of ``steps`` steps."""
    full = len(trainer.loader)
    trainer.steps_per_epoch = max(1, min(warmup, full))
    trainer.train_epoch(0)
    trainer.steps_per_epoch = full if steps == 0 else min(steps, full)
    sync(device)
    began, cpu_began = time.perf_counter(), time.process_time()
    record = trainer.train_epoch(1)
    sync(device)
    seconds = time.perf_counter() - began
    images = min(trainer.steps_per_epoch * trainer.local_batch_size, len(trainer.dataset.train_y))
    return {"steps": record["steps"], "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "process_cpu_seconds": time.process_time() - cpu_began,
            "fast_path": describe(trainer.train_model), "train_adv_acc": record.get("train_adv_acc")}


def time_evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, *, batch_size: int,
                  device: torch.device, threat: Any, exact: bool = True) -> dict[str, Any]:
    from atkit.evaluate import evaluate

    if attack.startswith("pgd"):  # untimed warm-up at the timed batch shape (kernel selection, allocator)
        with exact_fp32(exact):
            evaluate(model, x[:batch_size], y[:batch_size], attacks=["pgd1"], threat=threat, batch_size=batch_size,
                     device=device)
    sync(device)
    began = time.perf_counter()
    with exact_fp32(exact):
        result = evaluate(model, x, y, attacks=[attack], threat=threat, batch_size=batch_size, device=device)
    sync(device)
    seconds = time.perf_counter() - began
    return {"images": len(y), "seconds": seconds, "images_per_s": len(y) / seconds,
            "accuracy": result.accuracy[attack], "batch_size": batch_size}


# ------------------------------------------------------------------------------------------------ main
def _channels_last_arg(value: str) -> Any:
    return {"true": True, "false": False, "auto": "auto"}[value]


def _compile_arg(value: str) -> Any:
    return {"false": False, "true": True}.get(value, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="atkit model name (small_cnn for the CPU smoke form)")
    p.add_argument("--dataset", choices=["synthetic", "folder"], default="synthetic")
    p.add_argument("--root", help="ImageFolder tree with train/ and test/ (dataset folder)")
    p.add_argument("--n-train", type=int, default=0, help="synthetic training images (default: just enough)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed training steps; 0 = one full epoch")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (each path)")
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default 2 on CUDA, 0 on CPU)")
    p.add_argument("--paths", default=None,
                   help="comma list of reference,atkit,atkit_fp32 (default: all on CUDA, reference,atkit on CPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="atkit path precision")
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--compile", default="false", help="false, true or a torch.compile backend (atkit path)")
    p.add_argument("--eval-n", type=int, default=1000, help="test images for the evaluation benchmark (0: skip it)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="atkit evaluation batch (default 1000 CUDA, 256 CPU)")
    p.add_argument("--ref-eval-batch-size", type=int, default=200, help="reference evaluation batch (released codes)")
    p.add_argument("--eval-bf16", action="store_true", help="also time atkit PGD-20 in bf16")
    p.add_argument("--skip-aa", action="store_true", help="leave out standard AutoAttack")
    p.add_argument("--checkpoint", help="run folder or .pt of a trained model to evaluate (default: the model trained here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if args.dataset == "folder" and not args.root:
        raise ConfigError("--dataset folder needs --root (an ImageFolder tree with train/ and test/)")
    paths = (args.paths.split(",") if args.paths else
             ["reference", "atkit", "atkit_fp32"] if device.type == "cuda" else ["reference", "atkit"])
    for name in paths:
        if name not in ("reference", "atkit", "atkit_fp32"):
            raise ConfigError(f"unknown path {name!r}; accepted: reference, atkit, atkit_fp32")
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    eval_bs = args.eval_batch_size or (1000 if device.type == "cuda" else 256)
    n_train = args.n_train or max(args.batch_size * (max(args.steps, 1) + args.warmup), 2 * args.batch_size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the released scripts do; atkit's fast path does it too

    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python", "benchmarks/bench_at.py"] + [shlex.quote(a) for a in given])
    results: dict[str, Any] = {
        "benchmark": "pgd10-at-throughput",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(device),
        "settings": {"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
                     "steps": args.steps or "epoch", "warmup": args.warmup, "attack_steps": args.attack_steps,
                     "reference_workers": workers, "eval_n": args.eval_n, "eval_batch_size": eval_bs},
        "train": {},
    }
    with tempfile.TemporaryDirectory(prefix="atkit-bench-") as tmp:
        trainers: dict[str, Trainer] = {}
        for name in [p for p in paths if p.startswith("atkit")]:
            trainers[name] = atkit_trainer(args, device, tmp, exact=(name == "atkit_fp32"), n_train=n_train)
        first = next(iter(trainers.values()), None) or atkit_trainer(args, device, tmp, exact=True, n_train=n_train)
        dataset = first.dataset
        threat = first.config.threat_model()
        threat_eval = {"norm": threat.norm, "eps": threat.eps, "step_size": threat.step_size}
        # Every path starts from the same weights: the trainers build theirs from the same seed.
        initial = copy.deepcopy(first.model).to(memory_format=torch.contiguous_format)

        if "reference" in paths:
            log("timing the reference loop")
            loader = reference_loader(dataset.train_x, dataset.train_y, args.batch_size, train=True,
                                      workers=workers, pin_memory=device.type == "cuda")
            ref_model = copy.deepcopy(initial).to(device)
            steps = len(loader) if args.steps == 0 else args.steps
            results["train"]["reference"] = reference_train(
                ref_model, loader, device, steps=steps, warmup=args.warmup, eps=threat.eps,
                step_size=threat.step_size, attack_steps=args.attack_steps)
            del ref_model
        for name, trainer in trainers.items():
            log(f"timing {name}")
            results["train"][name] = time_trainer(trainer, device, steps=args.steps, warmup=args.warmup)
        ref_ips = results["train"].get("reference", {}).get("images_per_s")
        train_size = len(dataset.train_y) if args.dataset == "folder" else CIFAR_TRAIN_SIZE
        for name, row in results["train"].items():
            row["epoch_seconds_estimate"] = train_size / row["images_per_s"]
            if ref_ips and name != "reference":
                row["speedup_vs_reference"] = row["images_per_s"] / ref_ips
        results["settings"]["epoch_size_for_estimate"] = train_size

        if args.eval_n > 0:
            n = min(args.eval_n, len(dataset.test_y))
            x, y = to_float_images(dataset.test_x[:n]), dataset.test_y[:n]
            if args.checkpoint:
                model = load_model(args.checkpoint, device=device)
                results["settings"]["eval_model"] = f"checkpoint {args.checkpoint}"
            else:
                name = "atkit" if "atkit" in trainers else next(iter(trainers), None)
                model = (trainers[name] if name else first).model
                trained = (min(args.warmup, len(first.loader)) + results["train"][name]["steps"]) if name else 0
                results["settings"]["eval_model"] = (f"{args.model} after {trained} PGD-AT steps of the {name or 'no'} "
                                                     "path (not robust: AutoAttack time not representative)")
            model.eval()
            ev: dict[str, Any] = {}
            log("timing atkit PGD-20 (fp32)")
            ev["atkit_pgd20_fp32"] = time_evaluate(model, x, y, "pgd20", batch_size=eval_bs, device=device,
                                                   threat=threat_eval)
            if args.eval_bf16:
                fast = eval_model(model, device=device, precision="bf16", channels_last=device.type == "cuda")
                ev["atkit_pgd20_bf16"] = time_evaluate(fast, x, y, "pgd20", batch_size=eval_bs, device=device,
                                                       threat=threat_eval, exact=False)
            if "reference" in paths:
                ref_eval_loader = reference_loader(dataset.test_x[:n], dataset.test_y[:n], args.ref_eval_batch_size,
                                                   train=False, workers=workers, pin_memory=device.type == "cuda")
                log("timing reference PGD-20")
                ev["reference_pgd20"] = reference_eval_pgd(copy.deepcopy(model).to(memory_format=torch.contiguous_format),
                                                           ref_eval_loader, device, eps=threat.eps,
                                                           step_size=threat.step_size, steps=20)
                ev["atkit_pgd20_fp32"]["speedup_vs_reference"] = (ev["atkit_pgd20_fp32"]["images_per_s"]
                                                                  / ev["reference_pgd20"]["images_per_s"])
            if not args.skip_aa:
                log("timing standard AutoAttack")
                ev["atkit_aa_standard"] = time_evaluate(model, x, y, "aa", batch_size=eval_bs, device=device,
                                                        threat=threat_eval)
            results["eval"] = ev

    _print(results)
    if args.out:
        atomic_write_json(args.out, results)
        print(f"written: {args.out}")
    return results


def _print(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"{results['date']}  {m.get('gpu') or m['cpu']}  torch {m['torch']}")
    s = results["settings"]
    print(f"PGD-{s['attack_steps']} AT, {s['model']}, batch {s['batch_size']}, {s['steps']} timed steps")
    for name, row in results["train"].items():
        extra = f"  x{row['speedup_vs_reference']:.2f} vs reference" if "speedup_vs_reference" in row else ""
        print(f"  train {name:<11} {row['images_per_s']:9.1f} img/s  ({row['seconds']:.2f} s; "
              f"~{row['epoch_seconds_estimate']:.1f} s/epoch of {s['epoch_size_for_estimate']}){extra}")
    for name, row in results.get("eval", {}).items():
        extra = f"  x{row['speedup_vs_reference']:.2f} vs reference" if "speedup_vs_reference" in row else ""
        print(f"  eval  {name:<17} {row['images_per_s']:9.1f} img/s  ({row['seconds']:.2f} s on {row['images']}, "
              f"acc {row['accuracy']:.1f}%){extra}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

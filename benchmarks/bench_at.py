#!/usr/bin/env python
"""Throughput of PGD-10 adversarial training and of evaluation: a plain PyTorch loop against atkit's path.

In one process, on the same data and the same initial model, this times

* ``reference``: the loop as the released AT scripts write it -- ``torch.utils.data.DataLoader`` over the
  images served as PIL images (exactly as ``torchvision.datasets.CIFAR10.__getitem__`` does) through
  ``torchvision.transforms`` ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor``, fp32,
  eager, PGD-10 whose every step calls ``loss.backward()`` (filling parameter gradients too, cleared by
  ``model.zero_grad()``), then the training step, with ``loss.item()`` / accuracy ``.item()`` book-keeping
  per step;
* ``atkit``: the real :class:`atkit.training.trainer.Trainer` epoch (``train_epoch``) with method ``pgd_at``: data on the
  device with on-device augmentation, input-only attack gradients, no host synchronisation inside the
  step, and the fast path of :mod:`atkit.core.fast` (``--precision``, ``--channels-last``, ``--compile``).

Method (the same on any device): after untimed warm-up steps of each path, the paths run in ``--rounds``
rounds of ``--steps`` steps each, their order alternating (A B, B A, A B, ...), so a change of the machine's
load or clock hits both; each round gives one ratio of images/s, and the reported speed-up is the **median of
the per-round ratios** (with their range). Every row carries wall time and the process's CPU time
(``time.process_time``; DataLoader workers not included), and the work runs on ``--threads`` intra-op threads
(default 1: on a shared CPU a second OpenMP thread can make the same step several times slower). CUDA is
synchronised around every timed region. **Fairness**: both sides run under the same TF32 switches
(``--tf32``: ``off`` = full fp32 matmuls and convolutions, ``on`` = TF32 tensor cores); atkit's precision must
agree (``fp32`` is exact, so it needs ``--tf32 off``; ``tf32`` needs ``--tf32 on``; ``bf16`` runs under either),
and every row records the switches seen inside its timed region.

The evaluation part times PGD-20 (atkit against the reference loop, in the same TF32 mode; atkit bf16 with
``--eval-bf16``) the same way, interleaved in ``--eval-rounds`` rounds over the first ``--eval-n`` test
images, and standard AutoAttack once (``--skip-aa`` leaves it out). AutoAttack's time depends on how many points
survive its first attack: time it on a robust model (``--checkpoint``), not on the few-step model this script
trains. ``benchmarks/gpu_suite.sh`` runs these comparisons on a GPU in one call.

CPU smoke (seconds; the figures check that it runs, they are no target)::

    python benchmarks/bench_at.py --device cpu --model small_cnn --batch-size 32 --steps 3 --warmup 1 \\
        --eval-n 64 --skip-aa

GPU (CIFAR-10 JPEG tree unpacked to data/cifar10-jpeg)::

    python benchmarks/bench_at.py --device cuda --model resnet18 --dataset folder --root data/cifar10-jpeg \\
        --batch-size 128 --precision bf16 --tf32 on --rounds 4 --steps 10 --eval-n 1000 --skip-aa \\
        --out benchmarks/results/h100-resnet18.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing atkit
    sys.path.insert(0, str(ROOT))

from atkit.core.fast import describe, eval_model, precision_scope, tf32_mode, training_precision  # noqa: E402
from atkit.training.trainer import Trainer  # noqa: E402
from atkit.training.checkpoints import load_model  # noqa: E402
from atkit.data import to_float_images  # noqa: E402
from atkit.core.utils import ConfigError, atomic_write_json, resolve_device  # noqa: E402

CIFAR_TRAIN_SIZE = 50000
Runner = Callable[[], dict[str, Any]]  # one unit of work; returns at least {"images": n}


# ---------------------------------------------------------------------------------------------- machine
def tf32_flags() -> dict[str, bool]:
    """The TF32 switches in effect now (cuDNN convolutions, CUDA matmuls)."""
    return {"cudnn": bool(torch.backends.cudnn.allow_tf32), "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, GPU name, library versions, threads: enough to tell two result files apart."""
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


def set_threads(n: int) -> None:
    """``n`` intra-op (and, where still settable, inter-op) threads for this process."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # settable once, before any inter-op work: keep what the process has
        pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- interleaved timing
def interleave(runners: dict[str, Runner], rounds: int, device: torch.device) -> list[dict[str, dict[str, Any]]]:
    """Run every runner once per round, the order rotating each round (two paths: A B, B A, A B, ...).

    Returns one dict per round: ``{name: {"seconds", "process_cpu_seconds", "images", ...}}`` (the rest of what
    the runner returned is kept, e.g. the TF32 switches it saw)."""
    names = list(runners)
    out = []
    for r in range(rounds):
        shift = r % len(names)
        row: dict[str, dict[str, Any]] = {}
        for name in names[shift:] + names[:shift]:
            sync(device)
            began, cpu_began = time.perf_counter(), time.process_time()
            result = dict(runners[name]())
            sync(device)
            result.update(seconds=time.perf_counter() - began, process_cpu_seconds=time.process_time() - cpu_began)
            row[name] = result
        out.append(row)
    return out


def summarize_rounds(rounds: list[dict[str, dict[str, Any]]], reference: str = "reference",
                     epoch_images: Optional[int] = None) -> dict[str, dict[str, Any]]:
    """Per path: totals, images/s, per-round seconds; for every path beside ``reference`` the per-round
    ratio of its images/s to the reference's, their median (``speedup_vs_reference``) and range, and the same
    for process CPU time per image (``cpu_speedup_vs_reference``). ``epoch_images``: adds
    ``epoch_seconds_estimate = epoch_images / images_per_s``."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        rows = [r[name] for r in rounds]
        images, seconds = sum(r["images"] for r in rows), sum(r["seconds"] for r in rows)
        cpu = sum(r["process_cpu_seconds"] for r in rows)
        entry: dict[str, Any] = {"rounds": len(rows), "images": images, "seconds": seconds,
                                 "process_cpu_seconds": cpu, "images_per_s": images / seconds,
                                 "per_round_seconds": [round(r["seconds"], 4) for r in rows]}
        for key, value in rows[0].items():  # what the runner reported besides the timing (first round)
            if key not in ("images", "seconds", "process_cpu_seconds"):
                entry[key] = value
        if epoch_images:
            entry["epoch_seconds_estimate"] = epoch_images / entry["images_per_s"]
        if name != reference and reference in rounds[0]:
            ratios = [(r[name]["images"] / r[name]["seconds"]) / (r[reference]["images"] / r[reference]["seconds"])
                      for r in rounds]
            cpu_ratios = [(r[name]["images"] / max(r[name]["process_cpu_seconds"], 1e-9))
                          / (r[reference]["images"] / max(r[reference]["process_cpu_seconds"], 1e-9)) for r in rounds]
            entry.update(speedup_vs_reference=statistics.median(ratios), speedup_per_round=ratios,
                         speedup_range=[min(ratios), max(ratios)],
                         cpu_speedup_vs_reference=statistics.median(cpu_ratios))
        out[name] = entry
    return out


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
        from PIL import Image  # why: PIL is needed only by the reference loop's workers

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.targets[i]


def reference_loader(x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool, workers: int,
                     pin_memory: bool) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T  # why: torchvision is needed only by the reference loop

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


class ReferenceTraining:
    """The released scripts' PGD-AT loop, run ``steps`` at a time (attack in eval mode, as the ``pgd_at`` method),
    under the TF32 switches ``tf32`` (one iterator over ``loader``; a new one per epoch, as the released loops)."""

    def __init__(self, model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *, eps: float,
                 step_size: float, attack_steps: int, tf32: bool, lr: float = 0.1) -> None:
        self.model, self.loader, self.device, self.tf32 = model, loader, device, tf32
        self.eps, self.step_size, self.attack_steps = eps, step_size, attack_steps
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.batches = iter(loader)
        self.stats = {"loss": 0.0, "correct": 0}

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, steps: int) -> dict[str, Any]:
        seen = 0
        with tf32_mode(self.tf32):
            flags = tf32_flags()
            for _ in range(steps):
                x, y = self._next_batch()
                x, y = x.to(self.device), y.to(self.device)
                self.model.eval()
                x_adv = reference_pgd(self.model, x, y, self.eps, self.step_size, self.attack_steps)
                self.model.train()
                out = self.model(x_adv)
                loss = F.cross_entropy(out, y)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.stats["loss"] += loss.item() * y.size(0)  # the released loops' per-step host sync
                self.stats["correct"] += (out.max(1)[1] == y).sum().item()
                seen += y.size(0)
        return {"images": seen, "steps": steps, "tf32": flags}


def reference_eval_pgd(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, *, eps: float,
                       step_size: float, steps: int, tf32: bool) -> dict[str, Any]:
    """One pass of the released scripts' PGD evaluation over ``loader`` (batches moved to ``device`` one by one)."""
    model.eval()
    correct = seen = 0
    with tf32_mode(tf32):
        flags = tf32_flags()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x_adv = reference_pgd(model, x, y, eps, step_size, steps)
            with torch.no_grad():
                correct += (model(x_adv).max(1)[1] == y).sum().item()
            seen += y.size(0)
    return {"images": seen, "accuracy": 100.0 * correct / seen, "tf32": flags}


# ----------------------------------------------------------------------------------------------- atkit
def atkit_trainer(*, model: str, batch_size: int, precision: str, device: torch.device, out_dir: str,
                  dataset: str = "synthetic", root: Optional[str] = None, n_train: int = 1024, n_test: int = 64,
                  image_size: Optional[int] = None, attack_steps: int = 10, channels_last: Any = "auto",
                  compile: Any = False, seed: int = 0, name: str = "bench") -> Trainer:
    """A PGD-AT :class:`Trainer` (constant lr 0.1) as the benchmarks time it."""
    cfg: dict[str, Any] = dict(
        method="pgd_at", model=model, batch_size=batch_size, schedule="constant", lr=0.1, epochs=10_000,
        device=str(device), seed=seed, out_dir=out_dir, name=name, precision=precision, channels_last=channels_last,
        compile=compile, threat={"steps": attack_steps}, eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"]})
    if dataset == "synthetic":
        data: dict[str, Any] = {"n_train": n_train, "n_test": max(n_test, 16), "seed": seed}
        if image_size:
            data["image_size"] = image_size
        cfg.update(dataset="synthetic", data=data)
    else:
        cfg.update(dataset="folder", data={"root": root})
    return Trainer.new(cfg, progress=False)


class AtkitTraining:
    """``trainer.train_epoch`` run ``steps`` at a time under the trainer's own precision switches (as ``fit``).
    ``tf32``: under bf16, whose switches the trainer leaves alone, the TF32 mode of the fp32 work left outside
    autocast, set to the reference's so that both sides run under the same switches (``None``: leave them)."""

    def __init__(self, trainer: Trainer, tf32: Optional[bool] = None) -> None:
        self.trainer, self.epoch, self.tf32 = trainer, 0, tf32

    def run(self, steps: int) -> dict[str, Any]:
        t = self.trainer
        t.steps_per_epoch = max(1, min(steps, len(t.loader)))
        precision = t.precision_note["precision"]
        outer = tf32_mode(self.tf32) if self.tf32 is not None and precision == "bf16" else contextlib.nullcontext()
        with outer, precision_scope(precision, t.device):
            flags = tf32_flags()
            record = t.train_epoch(self.epoch)
        self.epoch += 1
        return {"images": min(record["steps"] * t.local_batch_size, len(t.dataset.train_y)), "steps": record["steps"],
                "tf32": flags, "precision": t.precision_note["precision"], "fast_path": describe(t.train_model)}


def compare_training(paths: dict[str, Any], *, rounds: int, steps: int, warmup: int, device: torch.device,
                     epoch_images: int, reference: str = "reference") -> dict[str, Any]:
    """Warm each path up (``warmup`` untimed steps), then time them interleaved (:func:`interleave`); ratios are
    against the path named ``reference``."""
    for path in paths.values():
        if warmup:
            path.run(warmup)
    timed = interleave({name: (lambda p=path: p.run(steps)) for name, path in paths.items()}, rounds, device)
    return summarize_rounds(timed, reference=reference, epoch_images=epoch_images)


def check_fair_precision(precision: str, tf32: bool, device: torch.device) -> str:
    """The training precision atkit will use; refuses a precision whose TF32 mode differs from the reference's."""
    used, _ = training_precision(precision, device, "pgd_at")
    if used == "fp32" and tf32:
        raise ConfigError("precision fp32 is exact (TF32 off) but --tf32 on times the reference with TF32: "
                          "use --precision tf32 with --tf32 on, or --tf32 off")
    if used == "tf32" and not tf32:
        raise ConfigError("precision tf32 runs TF32 but --tf32 off times the reference without: use --tf32 on")
    return used


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="atkit model name (small_cnn for the CPU smoke form)")
    p.add_argument("--dataset", choices=["synthetic", "folder"], default="synthetic")
    p.add_argument("--root", help="ImageFolder tree with train/ and test/ (dataset folder)")
    p.add_argument("--n-train", type=int, default=0, help="synthetic training images (default: just enough)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per path per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (order alternating)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (each path)")
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of this process (default 1)")
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default 2 on CUDA, 0 on CPU)")
    p.add_argument("--paths", default="reference,atkit", help="comma list of reference, atkit")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "tf32", "bf16"], help="atkit path precision")
    p.add_argument("--tf32", default="off", choices=["off", "on"],
                   help="TF32 switches for both sides (reference loop; atkit's fp32 arithmetic and evaluation)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--compile", default="false", help="false, true or a torch.compile backend (atkit path)")
    p.add_argument("--eval-n", type=int, default=1000, help="test images for the evaluation benchmark (0: skip it)")
    p.add_argument("--eval-rounds", type=int, default=2, help="interleaved rounds of the PGD-20 evaluation")
    p.add_argument("--eval-batch-size", type=int, default=None, help="atkit evaluation batch (default 1000 CUDA, 256 CPU)")
    p.add_argument("--ref-eval-batch-size", type=int, default=200, help="reference evaluation batch (released codes)")
    p.add_argument("--eval-bf16", action="store_true", help="also time atkit PGD-20 in bf16")
    p.add_argument("--skip-aa", action="store_true", help="leave out standard AutoAttack")
    p.add_argument("--checkpoint", help="run folder or .pt of a trained model to evaluate (default: the model trained here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    return p


def _evaluation(args: argparse.Namespace, model: nn.Module, dataset: Any, threat: Any,
                device: torch.device, paths: list[str], workers: int, tf32: bool) -> dict[str, Any]:
    from atkit.evaluation import evaluate  # why: only the evaluation part needs it

    n = min(args.eval_n, len(dataset.test_y))
    x, y = to_float_images(dataset.test_x[:n]), dataset.test_y[:n]
    eval_bs = args.eval_batch_size or (1000 if device.type == "cuda" else 256)
    threat_eval = {"norm": threat.norm, "eps": threat.eps, "step_size": threat.step_size}
    model.eval()
    exact = "tf32" if tf32 else "fp32"

    def atkit_pgd(view: nn.Module, precision: str) -> Runner:
        def run() -> dict[str, Any]:
            with precision_scope(precision, device):
                flags = tf32_flags()
                # The door sets the TF32 switches of the precision it is given: the same as this side's.
                acc = evaluate(view, x, y, attacks=["pgd20"], threat=threat_eval, batch_size=eval_bs, device=device,
                               precision="tf32" if precision == "tf32" else "fp32").accuracy["pgd20"]
            return {"images": len(y), "accuracy": acc, "tf32": flags, "precision": precision, "batch_size": eval_bs}
        return run

    runners: dict[str, Runner] = {}
    if "reference" in paths:
        ref_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        loader = reference_loader(dataset.test_x[:n], dataset.test_y[:n], args.ref_eval_batch_size, train=False,
                                  workers=workers, pin_memory=device.type == "cuda")
        runners["reference"] = lambda: reference_eval_pgd(ref_model, loader, device, eps=threat.eps,
                                                          step_size=threat.step_size, steps=20, tf32=tf32)
    runners[f"atkit_{exact}"] = atkit_pgd(model, exact)
    if args.eval_bf16:
        runners["atkit_bf16"] = atkit_pgd(eval_model(model, device=device, precision="bf16",
                                                     channels_last=device.type == "cuda"), "bf16")
    with precision_scope(exact, device):  # untimed warm-up at the timed batch shape (kernel selection, allocator)
        evaluate(model, x[:eval_bs], y[:eval_bs], attacks=["pgd1"], threat=threat_eval, batch_size=eval_bs, device=device)
    log(f"timing PGD-20 evaluation: {', '.join(runners)}")
    ev: dict[str, Any] = summarize_rounds(interleave(runners, args.eval_rounds, device))
    if not args.skip_aa:
        log("timing standard AutoAttack")
        with precision_scope("fp32", device):
            sync(device)
            began = time.perf_counter()
            acc = evaluate(model, x, y, attacks=["aa"], threat=threat_eval, batch_size=eval_bs, device=device).accuracy["aa"]
            sync(device)
        seconds = time.perf_counter() - began
        ev["atkit_aa_standard"] = {"images": len(y), "seconds": seconds, "images_per_s": len(y) / seconds,
                                   "accuracy": acc, "precision": "fp32"}
    return ev


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run the benchmark; the caller's thread count is restored afterwards (it is a process-wide setting, and a
    different count changes the floating-point sums of everything that runs after it in the same process)."""
    threads = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(threads)


def _main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if args.dataset == "folder" and not args.root:
        raise ConfigError("--dataset folder needs --root (an ImageFolder tree with train/ and test/)")
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for name in paths:
        if name not in ("reference", "atkit"):
            raise ConfigError(f"unknown path {name!r}; accepted: reference, atkit")
    if args.rounds < 1 or args.eval_rounds < 1 or args.steps < 1 or args.threads < 1:
        raise ConfigError("--rounds, --eval-rounds, --steps and --threads must be at least 1")
    tf32 = args.tf32 == "on"
    precision = check_fair_precision(args.precision, tf32, device)
    set_threads(args.threads)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    n_train = args.n_train or max(args.batch_size * (args.steps * args.rounds + args.warmup + 1), 2 * args.batch_size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the released scripts do; atkit's fast path does it too

    given = list(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "benchmark": "pgd10-at-throughput",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_at.py"] + [shlex.quote(a) for a in given]),
        "machine": machine_info(device),
        "method": "interleaved rounds (order alternating), median of per-round images/s ratios",
        "settings": {"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size, "rounds": args.rounds,
                     "steps_per_round": args.steps, "warmup": args.warmup, "attack_steps": args.attack_steps,
                     "precision": precision, "tf32": args.tf32, "threads": args.threads,
                     "reference_workers": workers, "eval_n": args.eval_n, "eval_rounds": args.eval_rounds},
    }
    with tempfile.TemporaryDirectory(prefix="atkit-bench-") as tmp:
        trainer = atkit_trainer(model=args.model, batch_size=args.batch_size, precision=precision, device=device,
                                out_dir=tmp, dataset=args.dataset, root=args.root, n_train=n_train,
                                n_test=args.eval_n, attack_steps=args.attack_steps,
                                channels_last={"true": True, "false": False}.get(args.channels_last, "auto"),
                                compile={"false": False, "true": True}.get(args.compile, args.compile), seed=args.seed)
        dataset, threat = trainer.dataset, trainer.config.threat_model()
        # Every path starts from the same weights.
        initial = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
        runners: dict[str, Any] = {}
        if "reference" in paths:
            loader = reference_loader(dataset.train_x, dataset.train_y, args.batch_size, train=True, workers=workers,
                                      pin_memory=device.type == "cuda")
            runners["reference"] = ReferenceTraining(copy.deepcopy(initial).to(device), loader, device, eps=threat.eps,
                                                     step_size=threat.step_size, attack_steps=args.attack_steps, tf32=tf32)
        if "atkit" in paths:
            runners["atkit"] = AtkitTraining(trainer, tf32=tf32)
        train_size = len(dataset.train_y) if args.dataset == "folder" else CIFAR_TRAIN_SIZE
        log(f"timing training: {', '.join(runners)} ({args.rounds} rounds of {args.steps} steps)")
        results["train"] = compare_training(runners, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                                            device=device, epoch_images=train_size)
        results["settings"]["epoch_size_for_estimate"] = train_size
        if args.eval_n > 0:
            if args.checkpoint:
                model = load_model(args.checkpoint, device=device)
                results["settings"]["eval_model"] = f"checkpoint {args.checkpoint}"
            else:
                model = trainer.model
                results["settings"]["eval_model"] = (f"{args.model} after a few PGD-AT steps (not robust: AutoAttack "
                                                     "time not representative)")
            results["eval"] = _evaluation(args, model, dataset, threat, device, paths, workers, tf32)
    _print(results)
    if args.out:
        atomic_write_json(args.out, results)
        print(f"written: {args.out}")
    return results


def _print(results: dict[str, Any]) -> None:
    m, s = results["machine"], results["settings"]
    print(f"{results['date']}  {m.get('gpu') or m['cpu']}  torch {m['torch']}  threads {m['torch_threads']}")
    print(f"PGD-{s['attack_steps']} AT, {s['model']}, batch {s['batch_size']}, {s['rounds']} rounds x "
          f"{s['steps_per_round']} steps, atkit {s['precision']}, TF32 {s['tf32']} on both sides")
    for part in ("train", "eval"):
        for name, row in results.get(part, {}).items():
            extra = (f"  x{row['speedup_vs_reference']:.2f} vs reference (median; rounds "
                     f"{row['speedup_range'][0]:.2f}-{row['speedup_range'][1]:.2f}; CPU time x"
                     f"{row['cpu_speedup_vs_reference']:.2f})" if "speedup_vs_reference" in row else "")
            acc = f", acc {row['accuracy']:.1f}%" if "accuracy" in row else ""
            print(f"  {part:5s} {name:<17} {row['images_per_s']:9.1f} img/s  ({row['seconds']:.2f} s wall, "
                  f"{row.get('process_cpu_seconds', float('nan')):.2f} s CPU{acc}){extra}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

"""The measurements of ``benchmarks/gpu_suite.sh``, one function per step, in the order of the suite.

Each step runs in its own process under its own time limit (``gpu_suite.py step NAME``) and writes every result
into ``gpu_suite.json`` the moment it has it (:meth:`gpu_suite.StepContext.part`), so a step cut by its limit or
failing half-way keeps what it measured and the next step still runs.

1. ``train`` -- ResNet-18 PGD-10 AT, batch 128, real CIFAR-10 images: atkit's fast path against the released
   scripts' plain loop (``bench_at.ReferenceTraining``) in the same process, interleaved in rounds, in three
   precisions: ``bf16`` (the reference with TF32 on, torch's default for convolutions), ``fp32`` (both sides TF32
   off) and ``tf32`` (both sides TF32 on).
2. ``autoattack`` -- a ResNet-18 briefly trained by PGD-AT (bf16, about 20 s), then standard AutoAttack on 1,000
   class-stratified test images in fp32, bf16 and TF32: time, robust accuracy, and each reduced precision's
   per-image agreement with fp32 (:func:`atkit.core.fast.evaluation_parity`: exact McNemar, Newcombe interval, parity
   within 0.5 points); then, if time remains, the same bf16 call inside an outer ``torch.no_grad()`` (what
   pyautoattack's own driver does and atkit's does not yet): time, peak memory, same per-image result.
3. ``wrn_profile`` -- WRN-34-10 step time (atkit bf16 against the plain loop), then a ``torch.profiler`` summary
   of ResNet-18 steps of both paths: wall time per step against the time the GPU is busy (union of its kernels).
4. ``compile`` -- ResNet-18 atkit bf16 with ``torch.compile`` (default mode, then ``mode="reduce-overhead"``,
   CUDA graphs) against eager atkit: warm-up (compilation) time and step speed.
5. ``parity`` (not in the default list) -- the bf16-vs-fp32 training parity run of ``benchmarks/parity.py``.

``--dry`` runs every step on the CPU at tiny sizes (small_cnn, batch 8, AutoAttack's APGD-CE at 2 iterations,
``torch.compile`` with the ``eager`` backend) so that CI checks the plumbing; it judges no target.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import bench_at as bench
from atkit.evaluation.autoattack import run_autoattack
from atkit.core.fast import AutocastModel, eval_model, evaluation_parity, precision_scope
from atkit.core.stats import accuracy_record
from atkit.training.trainer import Trainer
from atkit.data import to_float_images


@dataclass(frozen=True)
class Sizes:
    model: str
    wide_model: str
    batch_size: int
    attack_steps: int
    warmup: int
    rounds: int
    steps: int
    slow_rounds: int  # fp32 / tf32 comparisons (several times slower per step than bf16)
    slow_steps: int
    wide_rounds: int
    wide_steps: int
    brief_seconds: float
    brief_max_epochs: int
    brief_steps_per_epoch: int
    aa_n: int
    aa_batch_size: int
    aa_kwargs: dict[str, Any]
    aa_label: str
    profile_steps: int
    compile_warmup: int
    compile_rounds: int
    compile_steps: int
    compile_modes: tuple[tuple[str, dict[str, Any]], ...]
    workers: int
    parity_args: tuple[str, ...]
    synthetic: dict[str, Any] = field(default_factory=dict)


SIZES = {
    "gpu": Sizes(model="resnet18", wide_model="wrn34_10", batch_size=128, attack_steps=10, warmup=5, rounds=4, steps=10,
                 slow_rounds=3, slow_steps=6, wide_rounds=2, wide_steps=5, brief_seconds=20.0, brief_max_epochs=4,
                 brief_steps_per_epoch=100_000, aa_n=1000, aa_batch_size=1000, aa_kwargs={"version": "standard"},
                 aa_label="standard", profile_steps=3, compile_warmup=3, compile_rounds=3, compile_steps=10,
                 compile_modes=(("default", {}), ("reduce-overhead", {"mode": "reduce-overhead"})), workers=2,
                 parity_args=("--device", "cuda", "--model", "resnet18", "--epochs", "2", "--max-steps", "150",
                              "--seeds", "0,1", "--eval-n", "1000", "--schedule", "constant",
                              "--fast-precision", "bf16")),
    "dry": Sizes(model="small_cnn", wide_model="small_cnn", batch_size=8, attack_steps=2, warmup=1, rounds=2, steps=1,
                 slow_rounds=2, slow_steps=1, wide_rounds=2, wide_steps=1, brief_seconds=1.0, brief_max_epochs=1,
                 brief_steps_per_epoch=3, aa_n=16, aa_batch_size=16,
                 aa_kwargs={"version": "custom", "attacks": ["apgd-ce"], "n_restarts": 1, "n_iter": 2},
                 aa_label="APGD-CE, 2 iterations (dry form)", profile_steps=1, compile_warmup=1, compile_rounds=2,
                 compile_steps=1, compile_modes=(("backend=eager", {"backend": "eager"}),), workers=0,
                 parity_args=("--device", "cpu", "--model", "small_cnn", "--n-train", "64", "--batch-size", "16",
                              "--epochs", "1", "--max-steps", "2", "--attack-steps", "2", "--seeds", "0,1",
                              "--eval-n", "16", "--schedule", "constant", "--fast-precision", "bf16"),
                 synthetic={"n_train": 64, "n_test": 32, "image_size": 16}),
}
CIFAR_TRAIN = 50000


# ---------------------------------------------------------------------------------------------- helpers
def setup(ctx: Any) -> tuple[torch.device, Sizes]:
    """The device (CUDA, or the CPU for the dry form), threads, cuDNN autotuning, and the machine record."""
    device = torch.device("cpu" if ctx.dry else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here; the CPU form is gpu_suite.sh --dry")
    if not ctx.dry and not ctx.data_root:
        raise RuntimeError("no CIFAR-10 image folder: carry .device/cifar10-jpeg.tar.gz (gpu_suite.py prepare)")
    bench.set_threads(ctx.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ctx.set_machine(bench.machine_info(device))
    return device, SIZES["dry" if ctx.dry else "gpu"]


def new_trainer(ctx: Any, sz: Sizes, device: torch.device, *, model: str, precision: str, name: str) -> Trainer:
    data: dict[str, Any] = ({"dataset": "folder", "root": ctx.data_root} if ctx.data_root else
                            {"dataset": "synthetic", **sz.synthetic})
    return bench.atkit_trainer(model=model, batch_size=sz.batch_size, precision=precision, device=device,
                               out_dir=str(ctx.work / "runs"), attack_steps=sz.attack_steps, name=name, **data)


def epoch_images(trainer: Trainer, ctx: Any) -> int:
    return len(trainer.dataset.train_y) if ctx.data_root else CIFAR_TRAIN


def reference_for(trainer: Trainer, device: torch.device, sz: Sizes, *, tf32: bool) -> bench.ReferenceTraining:
    """The released scripts' loop on the trainer's data, from the trainer's initial weights."""
    ds, threat = trainer.dataset, trainer.config.threat_model()
    loader = bench.reference_loader(ds.train_x, ds.train_y, sz.batch_size, train=True, workers=sz.workers,
                                    pin_memory=device.type == "cuda")
    model = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    return bench.ReferenceTraining(model, loader, device, eps=threat.eps, step_size=threat.step_size,
                                   attack_steps=sz.attack_steps, tf32=tf32)


def peak_gib(device: torch.device) -> Any:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bits(flags: torch.Tensor) -> str:
    """Per-image correctness as a string of 0/1 (compact in the JSON; the parity test can be redone from it)."""
    return "".join("1" if bool(v) else "0" for v in flags.tolist())


def flags_of(text: str) -> list[bool]:
    return [c == "1" for c in text]


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    bench.sync(device)
    began = time.perf_counter()
    value = run()
    bench.sync(device)
    return value, time.perf_counter() - began


# ------------------------------------------------------------------------------------ 1. training speed
def step_train(ctx: Any) -> None:
    device, sz = setup(ctx)
    comparisons = (("bf16", "bf16", True, sz.rounds, sz.steps), ("fp32", "fp32", False, sz.slow_rounds, sz.slow_steps),
                   ("tf32", "tf32", True, sz.slow_rounds, sz.slow_steps))
    for label, precision, tf32, rounds, steps in comparisons:
        def compare(precision: str = precision, tf32: bool = tf32, rounds: int = rounds, steps: int = steps) -> dict:
            trainer = new_trainer(ctx, sz, device, model=sz.model, precision=precision, name=f"train-{precision}")
            paths = {"reference": reference_for(trainer, device, sz, tf32=tf32),
                     "atkit": bench.AtkitTraining(trainer, tf32=tf32)}
            result = bench.compare_training(paths, rounds=rounds, steps=steps, warmup=sz.warmup, device=device,
                                            epoch_images=epoch_images(trainer, ctx))
            return {"model": sz.model, "precision": precision, "tf32": tf32, "batch_size": sz.batch_size,
                    "attack_steps": sz.attack_steps, "rounds": rounds, "steps_per_round": steps, "warmup": sz.warmup,
                    "epoch_images": epoch_images(trainer, ctx), "paths": result}
        ctx.part(label, compare)


# ------------------------------------------------------------------------------ 2. AutoAttack precision
def step_autoattack(ctx: Any) -> None:
    device, sz = setup(ctx)
    trainer = new_trainer(ctx, sz, device, model=sz.model, precision="bf16", name="brief")
    path = bench.AtkitTraining(trainer)
    steps_per_epoch = min(len(trainer.loader), sz.brief_steps_per_epoch)
    began, steps = time.time(), 0
    while path.epoch < sz.brief_max_epochs and (path.epoch == 0 or time.time() - began < sz.brief_seconds):
        steps += path.run(steps_per_epoch)["steps"]
    ctx.put("brief_training", {"model": sz.model, "method": "pgd_at", "precision": "bf16", "steps": steps,
                               "epochs": path.epoch, "seconds": round(time.time() - began, 1),
                               "batch_size": sz.batch_size})
    model = trainer.model.eval()
    threat = trainer.config.threat_model()
    # AutoAttack calls the model on ever-changing batch sizes (the points still unbroken): cuDNN autotuning, which
    # the training fast path turned on, would re-time every convolution for each new size.
    torch.backends.cudnn.benchmark = False
    n = min(sz.aa_n, len(trainer.dataset.test_y))
    x, y, _ = trainer.dataset.eval_subset(n)
    x = to_float_images(x)
    ctx.put("n", n)
    ctx.put("attacks", sz.aa_label)
    done: dict[str, dict[str, Any]] = {}

    def run(precision: str, outer_no_grad: bool = False, key: str = "") -> dict[str, Any]:
        key = key or precision
        view = eval_model(model, device=device, precision=precision, channels_last=device.type == "cuda")
        progress: dict[str, Any] = {}
        t0 = time.perf_counter()

        def on_batch(attack: str, images_done: int, total: int) -> None:
            progress[attack] = {"done": images_done, "of": total, "at_seconds": round(time.perf_counter() - t0, 1)}
            ctx.put(key, {"progress": progress})

        reset_peak(device)
        with precision_scope(precision, device), (torch.no_grad() if outer_no_grad else contextlib.nullcontext()):
            flags = bench.tf32_flags()
            bench.sync(device)
            t0 = time.perf_counter()
            result = run_autoattack(view, x, y, eps=threat.eps, norm=threat.norm, batch_size=sz.aa_batch_size,
                                    device=device, on_batch=on_batch, **sz.aa_kwargs)
            bench.sync(device)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                clean = torch.cat([view(x[i:i + sz.aa_batch_size].to(device)).argmax(1).cpu()
                                   for i in range(0, n, sz.aa_batch_size)]) == y
        robust = result.correct.bool()
        return {"precision": precision, "seconds": seconds, "seconds_10k_extrapolated": seconds * 10000 / n,
                "robust": accuracy_record(int(robust.sum()), n), "clean": accuracy_record(int(clean.sum()), n),
                "per_attack": result.per_attack, "attack_progress": progress, "peak_memory_gib": peak_gib(device),
                "tf32": flags, "outer_no_grad": outer_no_grad, "warnings": result.warnings[:5],
                "channels_last": device.type == "cuda", "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "config": {k: v for k, v in result.config.items() if k in ("version", "attacks", "eps", "norm",
                                                                          "n_iter", "batch_size", "seed")},
                "correct_bits": bits(robust), "clean_bits": bits(clean)}

    for precision in ("fp32", "bf16", "tf32"):
        def measure(precision: str = precision) -> dict[str, Any]:
            row = run(precision)
            if precision != "fp32" and "fp32" in done:
                ref = done["fp32"]
                row["parity"] = evaluation_parity(flags_of(ref["correct_bits"]), flags_of(row["correct_bits"]),
                                                  precision=precision, evaluation=f"AutoAttack {sz.aa_label}")
                row["clean_parity"] = evaluation_parity(flags_of(ref["clean_bits"]), flags_of(row["clean_bits"]),
                                                        precision=precision, evaluation="clean")
            return row
        need = ({"bf16": 0.3, "tf32": 0.6}[precision] * done["fp32"]["seconds"]) if "fp32" in done else 0.0
        row = ctx.part(precision, measure, needs_seconds=need)
        if row:
            done[precision] = row
    if "bf16" in done:  # atkit's AutoAttack driver runs without the outer no_grad of pyautoattack's own driver
        def probe() -> dict[str, Any]:
            row = run("bf16", outer_no_grad=True, key="no_grad_probe")
            base = done["bf16"]
            return {"precision": "bf16", "seconds_with_no_grad": row["seconds"], "seconds_without": base["seconds"],
                    "peak_gib_with_no_grad": row["peak_memory_gib"], "peak_gib_without": base["peak_memory_gib"],
                    "same_result": row["correct_bits"] == base["correct_bits"],
                    "note": "the same run_autoattack call inside torch.no_grad(), as pyautoattack's own driver runs"}
        ctx.part("no_grad_probe", probe, needs_seconds=1.3 * done["bf16"]["seconds"])


# ---------------------------------------------------------------------------- 3. WRN-34-10 and profile
def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``intervals`` (overlaps counted once): the time a device is busy."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def profile_path(path: Any, device: torch.device, steps: int) -> dict[str, Any]:
    """Wall time of ``steps`` steps against the time the device is busy (union of its kernels' intervals)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _, wall = timed(device, lambda: path.run(steps))
    intervals = [(e.time_range.start, e.time_range.end) for e in prof.events()
                 if getattr(e, "device_type", None) == DeviceType.CUDA]
    busy = union_length(intervals)  # microseconds
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:8]
    out: dict[str, Any] = {"steps": steps, "wall_ms_per_step": 1000 * wall / steps,
                           "top_ops": [{"name": e.key[:80], "calls": e.count, "self_ms": getattr(e, key, 0.0) / 1000}
                                       for e in rows], "top_ops_by": key}
    if intervals:
        out.update(device_busy_ms_per_step=busy / 1000 / steps, device_busy_fraction=(busy / 1e6) / wall,
                   kernels_per_step=len(intervals) / steps)
    else:
        out.update(device_busy_ms_per_step=None, device_busy_fraction=None, kernels_per_step=None)
    return out


def step_wrn_profile(ctx: Any) -> None:
    device, sz = setup(ctx)

    def wide() -> dict[str, Any]:
        trainer = new_trainer(ctx, sz, device, model=sz.wide_model, precision="bf16", name="wide")
        paths = {"reference": reference_for(trainer, device, sz, tf32=True),
                 "atkit": bench.AtkitTraining(trainer, tf32=True)}
        result = bench.compare_training(paths, rounds=sz.wide_rounds, steps=sz.wide_steps, warmup=2, device=device,
                                        epoch_images=epoch_images(trainer, ctx))
        return {"model": sz.wide_model, "precision": "bf16", "tf32": True, "batch_size": sz.batch_size,
                "rounds": sz.wide_rounds, "steps_per_round": sz.wide_steps, "paths": result}

    ctx.part("wrn34_10", wide)

    def prof() -> dict[str, Any]:
        trainer = new_trainer(ctx, sz, device, model=sz.model, precision="bf16", name="profile")
        paths = {"atkit": bench.AtkitTraining(trainer, tf32=True),
                 "reference": reference_for(trainer, device, sz, tf32=True)}
        out = {}
        for name, path in paths.items():
            path.run(3)  # warm-up: cuDNN autotuning, allocator
            out[name] = profile_path(path, device, sz.profile_steps)
        return {"model": sz.model, "batch_size": sz.batch_size, "atkit_precision": "bf16", "paths": out}

    ctx.part("profile", prof)


# ------------------------------------------------------------------------------------- 4. torch.compile
def step_compile(ctx: Any) -> None:
    device, sz = setup(ctx)
    eager_trainer = new_trainer(ctx, sz, device, model=sz.model, precision="bf16", name="eager")
    eager = bench.AtkitTraining(eager_trainer)
    eager.run(sz.warmup)
    for label, kwargs in sz.compile_modes:
        def compiled_run(kwargs: dict[str, Any] = kwargs, label: str = label) -> dict[str, Any]:
            torch._dynamo.reset()
            trainer = new_trainer(ctx, sz, device, model=sz.model, precision="bf16", name=f"compile-{label}")
            fast = trainer.train_model
            trainer.train_model = AutocastModel(trainer.model, dtype=trainer.train_dtype,
                                                channels_last=getattr(fast, "channels_last", False),
                                                compiled=torch.compile(trainer.model, **kwargs))
            path = bench.AtkitTraining(trainer)
            _, warm = timed(device, lambda: path.run(sz.compile_warmup))
            result = bench.compare_training({"eager": eager, "compiled": path}, rounds=sz.compile_rounds,
                                            steps=sz.compile_steps, warmup=0, device=device,
                                            epoch_images=epoch_images(trainer, ctx), reference="eager")
            stats = {k: int(v) for k, v in torch._dynamo.utils.counters.get("stats", {}).items()}
            return {"mode": label, "torch_compile_kwargs": kwargs, "warmup_steps": sz.compile_warmup,
                    "warmup_seconds": warm, "dynamo_stats": stats, "paths": result}
        ctx.part(label, compiled_run, needs_seconds=5.0 if ctx.dry else 40.0)


# ----------------------------------------------------------------------------------- 5. training parity
def step_parity(ctx: Any) -> None:
    device, sz = setup(ctx)
    import parity  # why: the optional step's script; imported only when it runs

    data = ["--dataset", "folder", "--root", ctx.data_root] if ctx.data_root else ["--dataset", "synthetic"]

    def run() -> dict[str, Any]:
        result = parity.main(list(sz.parity_args) + data)
        return {k: result[k] for k in ("criterion", "summary", "runs", "settings")}

    ctx.part("parity", run)


STEP_FUNCTIONS: dict[str, Callable[[Any], None]] = {
    "train": step_train, "autoattack": step_autoattack, "wrn_profile": step_wrn_profile, "compile": step_compile,
    "parity": step_parity,
}

#!/usr/bin/env python
"""The GPU suite's driver (``benchmarks/gpu_suite.sh`` calls it): its result file, the steps' book-keeping, the
one-screen summary and the bundle a bare device machine needs. Only ``step`` imports torch (the measurements
live in ``benchmarks/gpu_suite_steps.py``), so ``mark``, ``summarize`` and ``prepare`` work anywhere.

Subcommands::

    init      --out OUT ...         start OUT/gpu_suite.json (mode, time budget, data, wheels, optional packages)
    step NAME --out OUT ...         run one measurement step; it writes each result into the JSON as it gets it
    mark NAME RC --out OUT          record how a step's process ended (124/137: cut by its time limit)
    summarize OUT                   the one-screen summary from whatever OUT/gpu_suite.json holds (also when cut)
    prepare [--archive FILE]        on the sending machine: the pyautoattack wheel in .whl/ (downloaded, or built
                                    from the installed package with --from-installed), without its 44 MB of
                                    example weights, and the CIFAR-10 JPEG archive in .device/

Everything goes into two files under OUT (the device machine returns at most 8): ``gpu_suite.json``, replaced
atomically after every result, and ``gpu_suite.log``.
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "gpu_suite.json"
LOG = "gpu_suite.log"
STEPS = ("train", "autoattack", "wrn_profile", "compile", "parity")
DEFAULT_STEPS = ("train", "autoattack", "wrn_profile", "compile")
# Packages atkit can use but a bare device machine lacks: the suite must run without them.
OPTIONAL_PACKAGES = ("papermill", "ipywidgets", "submitit", "tensorboard", "jupyter")
PYAUTOATTACK = "pyautoattack==0.2.0"
WHEEL_DROP = ("pyautoattack/examples/",)  # 44 MB of example weights the attacks never read
ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
ARCHIVE_SHA256 = "1f6eacae8cafbd2e54f53210888fddc9731f7d0142cbf118983cdad2f2c56bcd"
# benchmarks/README.md, "Targets".
TARGETS = {"resnet18_epoch_s": ("<=", 6.0), "resnet18_speedup": (">=", 3.0), "wrn34_10_epoch_s": ("<=", 90.0),
           "aa_10k_s": ("<=", 300.0)}
PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "-d"]


# ------------------------------------------------------------------------------------------ result file
def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_results(out: Path) -> dict[str, Any]:
    path = Path(out) / RESULTS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def update_results(out: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the JSON, apply ``change`` in place, write it back atomically (temp file in OUT, then rename; one
    writer at a time: the steps run one after the other)."""
    out = Path(out)
    data = read_results(out)
    change(data)
    tmp = out / f"{RESULTS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, out / RESULTS)
    return data


def step_entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return data.setdefault("steps", {}).setdefault(name, {})


def put(out: Path, step: str, key: str, value: Any) -> None:
    """``steps[step].results[key] = value``, written at once."""
    update_results(out, lambda d: step_entry(d, step).setdefault("results", {}).__setitem__(key, value))


# ------------------------------------------------------------------------------------------- init, mark
def cmd_init(args: argparse.Namespace) -> int:
    def change(d: dict[str, Any]) -> None:
        d.clear()
        d.update(suite="atkit gpu_suite", dry=bool(args.dry), started=now(), budget_seconds=args.budget,
                 steps_planned=args.steps.split(","), data_root=args.data_root or None,
                 command=args.command or None,
                 environment={"python": sys.version.split()[0], "executable": sys.executable,
                              "wheels": sorted(p.name for p in Path(os.environ.get("WHEELS") or ROOT / ".whl")
                                               .glob("*.whl")),
                              "pyautoattack": _where("pyautoattack"),
                              "atkit": _where("atkit"),
                              "optional_packages_importable": {n: _where(n) is not None for n in OPTIONAL_PACKAGES}},
                 steps={})
    update_results(Path(args.out), change)
    return 0


def _where(module: str) -> Optional[str]:
    """Where ``module`` would be imported from (without importing it), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return None if spec is None else str(spec.origin or (list(spec.submodule_search_locations or []) or ["?"])[0])


def cmd_mark(args: argparse.Namespace) -> int:
    """Close a step's entry from its exit code unless the step closed it itself (``ok``/``failed``)."""
    rc = int(args.rc)
    tail = _log_tail(Path(args.out) / LOG, 3)

    def change(d: dict[str, Any]) -> None:
        entry = step_entry(d, args.name)
        entry.setdefault("limit_seconds", args.limit)
        if args.skipped:
            entry.update(status="skipped", reason=args.skipped)
            return
        if entry.get("status") in ("ok", "partial", "failed") and rc == 0:
            return
        if rc in (124, 137):
            entry.update(status="timeout", error=f"cut at its time limit ({args.limit} s); results so far kept")
        elif rc != 0:
            entry.update(status="failed", exit_code=rc, error=entry.get("error") or " | ".join(tail))
        elif entry.get("status") in (None, "running"):
            entry["status"] = "ok"
        if "began_epoch" in entry:
            entry["seconds"] = round(time.time() - entry["began_epoch"], 1)
    update_results(Path(args.out), change)
    return 0


def _log_tail(path: Path, n: int) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return []
    return [ln[:300] for ln in lines[-n:]]


# -------------------------------------------------------------------------------------------------- step
class StepContext:
    """What a measurement step gets: sizes by mode, its deadline, and ``put``/``part`` writing into the JSON."""

    def __init__(self, name: str, out: Path, *, dry: bool, deadline: float, data_root: Optional[str], work: Path,
                 threads: int) -> None:
        self.name, self.out, self.dry, self.deadline = name, out, dry, deadline
        self.data_root, self.work, self.threads = data_root, work, threads
        self.failed_parts: list[str] = []

    def left(self) -> float:
        return self.deadline - time.time()

    def put(self, key: str, value: Any) -> None:
        put(self.out, self.name, key, value)

    def set_machine(self, machine: dict[str, Any]) -> None:
        update_results(self.out, lambda d: d.setdefault("machine", machine))

    def part(self, key: str, run: Callable[[], Any], *, needs_seconds: float = 0.0) -> Any:
        """Run one measurement; write its result (or its error, or why it was skipped) under ``key``. A failing
        part does not stop the step's other parts."""
        if self.left() < needs_seconds:
            self.put(key, {"skipped": f"{self.left():.0f} s left in the step, about {needs_seconds:.0f} s needed"})
            log(f"{self.name}/{key}: skipped (time)")
            return None
        log(f"{self.name}/{key}: start ({self.left():.0f} s left)")
        began = time.time()
        try:
            value = run()
        except Exception as exc:  # noqa: BLE001 - recorded, and the next part runs
            traceback.print_exc()
            self.failed_parts.append(key)
            self.put(key, {"error": f"{type(exc).__name__}: {exc}"[:500], "seconds": round(time.time() - began, 1)})
            return None
        if isinstance(value, dict):
            value.setdefault("part_seconds", round(time.time() - began, 1))
        self.put(key, value)
        log(f"{self.name}/{key}: done in {time.time() - began:.1f} s")
        return value


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cmd_step(args: argparse.Namespace) -> int:
    out = Path(args.out)
    began = time.time()
    update_results(out, lambda d: step_entry(d, args.name).update(status="running", began=now(), began_epoch=began,
                                                                  limit_seconds=round(args.deadline - began)))
    ctx = StepContext(args.name, out, dry=args.dry, deadline=args.deadline, data_root=args.data_root,
                      work=Path(args.work), threads=args.threads)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gpu_suite_steps  # why: the measurements import torch; mark/summarize/prepare must run without it

        gpu_suite_steps.STEP_FUNCTIONS[args.name](ctx)
    except Exception as exc:  # noqa: BLE001 - the step's failure is recorded; the suite goes on
        traceback.print_exc()
        update_results(out, lambda d: step_entry(d, args.name).update(
            status="failed", error=f"{type(exc).__name__}: {exc}"[:500], seconds=round(time.time() - began, 1)))
        return 1
    status = "partial" if ctx.failed_parts else "ok"
    update_results(out, lambda d: step_entry(d, args.name).update(status=status, failed_parts=ctx.failed_parts,
                                                                  seconds=round(time.time() - began, 1)))
    return 0


# --------------------------------------------------------------------------------------------- summary
def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def figures(data: dict[str, Any]) -> dict[str, Optional[float]]:
    """The target figures, from what the steps wrote (None where a step did not get there)."""
    train = _get(data, "steps", "train", "results") or {}
    aa = _get(data, "steps", "autoattack", "results") or {}
    wrn = _get(data, "steps", "wrn_profile", "results", "wrn34_10", "paths", "atkit") or {}
    fp32_aa = aa.get("fp32") or {}
    return {"resnet18_epoch_s": _get(train, "bf16", "paths", "atkit", "epoch_seconds_estimate"),
            "resnet18_speedup": _get(train, "bf16", "paths", "atkit", "speedup_vs_reference"),
            "wrn34_10_epoch_s": wrn.get("epoch_seconds_estimate"),
            "aa_10k_s": fp32_aa.get("seconds_10k_extrapolated")}


def summary_lines(data: dict[str, Any], out: Path) -> list[str]:
    if not data:
        return [f"gpu_suite: no {RESULTS} in {out} (cut before the first step wrote): see {out / LOG}"] + \
            [f"  log: {ln}" for ln in _log_tail(out / LOG, 6)]
    dry = bool(data.get("dry"))
    m = data.get("machine") or {}
    lines = [f"gpu_suite{' DRY (CPU, tiny sizes: no target judged)' if dry else ''}: {m.get('gpu') or m.get('cpu', '?')}"
             f", torch {m.get('torch', '?')}, started {data.get('started', '?')}, results {out / RESULTS}"]
    steps = data.get("steps") or {}
    lines.append("  steps: " + ", ".join(f"{n} {s.get('status', '?')}"
                                         + (f" ({s['seconds']:.0f} s)" if isinstance(s.get("seconds"), (int, float)) else "")
                                         for n, s in steps.items()))
    for name, s in steps.items():
        if s.get("status") in ("failed", "timeout", "partial"):
            lines.append(f"    {name}: {s.get('error') or 'failed parts: ' + ', '.join(s.get('failed_parts', []))}"[:150])
    train = _get(steps, "train", "results") or {}
    for label, row in train.items():
        a, r = _get(row, "paths", "atkit"), _get(row, "paths", "reference")
        if not a or not r:
            lines.append(f"  [1-2] ResNet-18 {label}: {row.get('error') or row.get('skipped') or 'no result'}"[:150])
            continue
        lines.append(f"  [1-2] {row.get('model')} PGD-{row.get('attack_steps')} AT b{row.get('batch_size')} atkit {label} "
                     f"(TF32 {'on' if row.get('tf32') else 'off'} both): {a['epoch_seconds_estimate']:.1f} s/epoch vs plain "
                     f"{r['epoch_seconds_estimate']:.1f}: x{a['speedup_vs_reference']:.2f} "
                     f"[{a['speedup_range'][0]:.2f}-{a['speedup_range'][1]:.2f}], CPU-time x{a['cpu_speedup_vs_reference']:.2f}")
    aa = _get(steps, "autoattack", "results") or {}
    if aa.get("brief_training"):
        b = aa["brief_training"]
        lines.append(f"  [3] model: {b.get('model')} {b.get('steps')} PGD-AT steps ({b.get('precision')}, "
                     f"{b.get('seconds', 0):.0f} s); AutoAttack {aa.get('attacks', '')} on {aa.get('n', '?')} test images:")
    for precision in ("fp32", "bf16", "tf32"):
        row = aa.get(precision)
        if not row:
            continue
        if "seconds" not in row or "robust" not in row:
            lines.append(f"      {precision}: {row.get('error') or row.get('skipped') or 'cut: ' + json.dumps(row.get('progress'))}"[:150])
            continue
        rob = row["robust"]
        text = (f"      {precision}: {row['seconds']:.1f} s (10k: {row['seconds_10k_extrapolated']:.0f} s), robust "
                f"{rob['accuracy']:.1f} % [{rob['ci95'][0]:.1f}, {rob['ci95'][1]:.1f}]")
        par = row.get("parity")
        if par:
            text += (f"; vs fp32 agree {par['agreement']:.1f} %, diff {par['difference']:+.2f} "
                     f"[{par['diff_ci95'][0]:+.2f}, {par['diff_ci95'][1]:+.2f}], McNemar p {par['mcnemar_p']:.2g}, "
                     f"parity(+-{par['margin']:g}): {'yes' if par['parity'] else 'NO'}")
        lines.append(text)
    probe = aa.get("no_grad_probe")
    if probe and "seconds_with_no_grad" in probe:
        lines.append(f"      outer torch.no_grad() ({probe['precision']}): {probe['seconds_with_no_grad']:.1f} s vs "
                     f"{probe['seconds_without']:.1f} s, peak memory {probe['peak_gib_with_no_grad']} vs "
                     f"{probe['peak_gib_without']} GiB, same per-image result: {probe['same_result']}")
    wp = _get(steps, "wrn_profile", "results") or {}
    wrn = _get(wp, "wrn34_10", "paths")
    if wrn:
        a, r = wrn.get("atkit", {}), wrn.get("reference", {})
        lines.append(f"  [4] {wp['wrn34_10'].get('model')} atkit bf16: {a.get('epoch_seconds_estimate', 0):.1f} s/epoch"
                     + (f" (x{a['speedup_vs_reference']:.2f} the plain loop)" if "speedup_vs_reference" in a else ""))
    for path, prof in (_get(wp, "profile", "paths") or {}).items():
        busy = prof.get("device_busy_fraction")
        lines.append(f"      profile {path}: {prof.get('wall_ms_per_step', 0):.1f} ms/step wall, "
                     + (f"device busy {prof['device_busy_ms_per_step']:.1f} ms ({100 * busy:.0f} %), "
                        f"{prof['kernels_per_step']:.0f} kernels/step" if busy is not None else "no device timeline (CPU)"))
    for mode, row in (_get(steps, "compile", "results") or {}).items():
        c = _get(row, "paths", "compiled")
        lines.append(f"      compile {mode}: " + (f"warm-up {row['warmup_seconds']:.0f} s, step x{c['speedup_vs_reference']:.2f} "
                                                  f"of eager, {c['epoch_seconds_estimate']:.1f} s/epoch" if c else
                                                  str(row.get('error') or row.get('skipped'))[:110]))
    par = _get(steps, "parity", "results", "parity", "summary")
    if par:
        lines.append("  [5] training parity bf16 vs fp32: " + "; ".join(
            f"{k} {v.get('difference', 0):+.2f}" + (f" (2 s.e. {v['two_standard_errors']:.2f})" if 'two_standard_errors' in v else "")
            for k, v in par.items()))
    for key, value in figures(data).items():
        op, bound = TARGETS[key]
        met = None if value is None or dry else (value <= bound if op == "<=" else value >= bound)
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"  target {key:17s} {shown:>9s} {op} {bound:g}: "
                     f"{ {True: 'met', False: 'MISSED', None: 'not judged'}[met]}")
    return lines


def cmd_summarize(args: argparse.Namespace) -> int:
    out = Path(args.out)
    data = read_results(out)
    if data and args.wall_seconds is not None:
        data = update_results(out, lambda d: d.update(wall_seconds=args.wall_seconds, finished=now()))
    print("\n".join(summary_lines(data, out)))
    return 0


# ------------------------------------------------------------------------------------------- prepare
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> Path:
    """A wheel (zip) of ``files`` with a fresh ``RECORD`` (sha256 and size of every file)."""
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist_info}/RECORD", record)
    os.replace(tmp, path)
    return path


def slim_wheel(path: Path, drop: Sequence[str] = WHEEL_DROP) -> Path:
    """Rewrite the wheel at ``path`` without the files under ``drop`` (RECORD rewritten to match)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        files = {n: z.read(n) for n in names
                 if not n.endswith("/") and not n.startswith(tuple(drop)) and n != f"{dist_info}/RECORD"}
    return _write_wheel(path, files, dist_info)


def wheel_from_installed(dist_name: str, dest: Path, drop: Sequence[str] = WHEEL_DROP) -> Path:
    """Build ``<name>-<version>-py3-none-any.whl`` in ``dest`` from an installed pure-Python distribution (no
    network needed): its own files (no byte code, nothing under ``drop``), METADATA and WHEEL."""
    dist = importlib.metadata.distribution(dist_name)
    wheel_meta = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_meta or "py3-none-any" not in wheel_meta:
        raise SystemExit(f"{dist_name} is not a pure-Python py3-none-any distribution; download its wheel instead")
    name, version = dist.metadata["Name"].replace("-", "_"), dist.version
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for f in dist.files or []:
        rel = str(f).replace(os.sep, "/")
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc") or rel.startswith(tuple(drop)):
            continue
        if rel.startswith(dist_info + "/") and rel.split("/")[-1] not in ("METADATA", "WHEEL", "top_level.txt",
                                                                          "entry_points.txt", "LICENSE"):
            continue
        files[rel] = Path(dist.locate_file(f)).read_bytes()
    dest.mkdir(parents=True, exist_ok=True)
    return _write_wheel(dest / f"{name}-{version}-py3-none-any.whl", files, dist_info)


def _travel_size(root: Path) -> int:
    """Bytes of what a device call sends besides the carried folders: tracked and untracked-not-ignored files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def cmd_prepare(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    wheels, device_dir = root / ".whl", root / ".device"
    wheels.mkdir(exist_ok=True)
    existing = sorted(wheels.glob("pyautoattack-*.whl"))
    if args.from_installed:
        for old in existing:
            old.unlink()
        wheel = wheel_from_installed("pyautoattack", wheels)
    elif existing:
        wheel = existing[-1]
    else:
        cmd = PIP_DOWNLOAD + [str(wheels), PYAUTOATTACK]
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        wheel = sorted(wheels.glob("pyautoattack-*.whl"))[-1]
    slim_wheel(wheel)
    print(f"wheel: {wheel.relative_to(root)} ({wheel.stat().st_size / 2**20:.2f} MiB, examples removed)")
    target = device_dir / ARCHIVE_NAME
    if args.archive:
        source = Path(args.archive)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != ARCHIVE_SHA256:
            print(f"warning: {source} has sha256 {digest}, not the documented {ARCHIVE_SHA256}", file=sys.stderr)
        device_dir.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
    if not target.is_file():
        print(f"no {target.relative_to(root)}: pass --archive path/to/{ARCHIVE_NAME}", file=sys.stderr)
        return 2
    carried = sum(p.stat().st_size for d in (wheels, device_dir) for p in d.rglob("*") if p.is_file())
    tree = _travel_size(root)
    total = (carried + tree) / 2**20
    print(f"archive: {target.relative_to(root)} ({target.stat().st_size / 2**20:.1f} MiB); tree {tree / 2**20:.1f} "
          f"MiB + carried {carried / 2**20:.1f} MiB = {total:.1f} MiB of the 64 MiB a call may send")
    return 0 if total < 64 else 1


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("init")
    s.add_argument("--out", required=True)
    s.add_argument("--dry", action="store_true")
    s.add_argument("--budget", type=int, default=0)
    s.add_argument("--steps", default=",".join(DEFAULT_STEPS))
    s.add_argument("--data-root", default="")
    s.add_argument("--command", default="")
    s = sub.add_parser("step")
    s.add_argument("name", choices=STEPS)
    s.add_argument("--out", required=True)
    s.add_argument("--dry", action="store_true")
    s.add_argument("--deadline", type=float, required=True, help="epoch seconds by which the step must be done")
    s.add_argument("--data-root", default="")
    s.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "atkit_gpu_suite"))
    s.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("mark")
    s.add_argument("name", choices=STEPS)
    s.add_argument("rc", type=int)
    s.add_argument("--out", required=True)
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--skipped", default="", help="mark the step skipped, with this reason")
    s = sub.add_parser("summarize")
    s.add_argument("out")
    s.add_argument("--wall-seconds", type=float, default=None)
    s = sub.add_parser("prepare")
    s.add_argument("--archive", help=f"the CIFAR-10 JPEG archive ({ARCHIVE_NAME}) to copy into .device/")
    s.add_argument("--from-installed", action="store_true",
                   help="build the pyautoattack wheel from the installed package instead of downloading it")
    s.add_argument("--root", default=str(ROOT), help="the checkout whose .whl/ and .device/ to fill")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return {"init": cmd_init, "step": cmd_step, "mark": cmd_mark, "summarize": cmd_summarize,
            "prepare": cmd_prepare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

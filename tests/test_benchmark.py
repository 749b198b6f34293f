"""The benchmark scripts in their CPU smoke form: they run, time both loops, and write what they claim.

No timing is asserted (shared CPUs); the tests check the plumbing and that the reference loop's attack is the
same attack as atkit's, so the comparison is like for like.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"



@pytest.fixture(autouse=True)
def _keep_thread_count():
    """The benchmarks set the process's thread count; later tests must run with the count they expect (a different
    count changes floating-point sums, and a seeded training test's numbers with them)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

def _load(name: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"atkit_bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_both_loops(tmp_path):
    bench = _load("bench_at")
    out = tmp_path / "smoke.json"
    results = bench.main(["--device", "cpu", "--model", "small_cnn", "--batch-size", "8", "--steps", "1",
                          "--rounds", "2", "--warmup", "1", "--attack-steps", "2", "--eval-n", "16", "--skip-aa",
                          "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["command"].startswith("python benchmarks/bench_at.py --device cpu")
    assert written["date"] and written["machine"]["cpu_cores"] >= 1 and written["machine"]["torch"]
    assert written["machine"]["torch_threads"] == 1 and written["settings"]["threads"] == 1  # explicit, default 1
    train = written["train"]
    assert set(train) == {"reference", "atkit"}
    for row in train.values():
        assert row["rounds"] == 2 and row["images"] == 16 and len(row["per_round_seconds"]) == 2
        assert row["seconds"] > 0 and row["process_cpu_seconds"] > 0
        assert row["tf32"] == {"cudnn": False, "matmul": False}  # --tf32 off on both sides
    atkit = train["atkit"]
    assert atkit["speedup_vs_reference"] == pytest.approx(statistics.median(atkit["speedup_per_round"]))
    assert atkit["precision"] == "fp32"  # "auto" on the CPU is the exact path
    ev = written["eval"]
    assert set(ev) == {"reference", "atkit_fp32"}  # --skip-aa
    assert ev["atkit_fp32"]["images"] == 32 and 0.0 <= ev["atkit_fp32"]["accuracy"] <= 100.0  # 2 rounds x 16
    assert ev["reference"]["tf32"] == ev["atkit_fp32"]["tf32"] == {"cudnn": False, "matmul": False}
    assert results["train"].keys() == train.keys()


def test_both_sides_run_under_the_same_tf32_switches():
    """The fairness rule: --tf32 on times the reference and atkit (bf16 or tf32) with TF32 on, each row records
    the switches seen inside its timed region, and a precision whose TF32 mode differs is refused up front."""
    bench = _load("bench_at")
    from atkit.core.utils import ConfigError

    for precision in ("bf16", "tf32"):
        results = bench.main(["--device", "cpu", "--model", "small_cnn", "--batch-size", "8", "--steps", "1",
                              "--rounds", "1", "--warmup", "0", "--attack-steps", "1", "--eval-n", "0",
                              "--precision", precision, "--tf32", "on"])
        train = results["train"]
        assert train["reference"]["tf32"] == train["atkit"]["tf32"] == {"cudnn": True, "matmul": True}, precision
        assert train["atkit"]["precision"] == precision
    with pytest.raises(ConfigError, match="precision fp32 is exact"):
        bench.check_fair_precision("fp32", True, torch.device("cpu"))
    with pytest.raises(ConfigError, match="--tf32 on"):
        bench.check_fair_precision("tf32", False, torch.device("cpu"))


def test_interleaved_rounds_alternate_the_order_and_report_the_median_ratio():
    bench = _load("bench_at")
    calls = []
    runners = {name: (lambda n=name: calls.append(n) or {"images": 4}) for name in ("reference", "atkit")}
    rounds = bench.interleave(runners, 4, torch.device("cpu"))
    assert calls == ["reference", "atkit", "atkit", "reference", "reference", "atkit", "atkit", "reference"]
    assert len(rounds) == 4 and all(r["atkit"]["images"] == 4 and r["atkit"]["seconds"] >= 0 for r in rounds)
    three = []
    bench.interleave({n: (lambda n=n: three.append(n) or {"images": 1}) for n in "abc"}, 3, torch.device("cpu"))
    assert three == list("abcbcacab")  # every path leads once

    def row(ref_s, ours_s, ref_cpu, ours_cpu):
        return {"reference": {"images": 10, "seconds": ref_s, "process_cpu_seconds": ref_cpu},
                "atkit": {"images": 10, "seconds": ours_s, "process_cpu_seconds": ours_cpu, "tf32": {"cudnn": False}}}
    summary = bench.summarize_rounds([row(2.0, 1.0, 2.0, 2.0), row(3.0, 1.0, 3.0, 1.0), row(9.0, 1.0, 1.0, 1.0)],
                                     epoch_images=1000)
    atkit = summary["atkit"]
    assert atkit["speedup_per_round"] == pytest.approx([2.0, 3.0, 9.0])
    assert atkit["speedup_vs_reference"] == pytest.approx(3.0)  # the median, not the ratio of totals (14/3)
    assert atkit["speedup_range"] == pytest.approx([2.0, 9.0])
    assert atkit["cpu_speedup_vs_reference"] == pytest.approx(1.0)  # per-round CPU ratios 1, 3, 1
    assert atkit["images_per_s"] == pytest.approx(30 / 3.0) and atkit["epoch_seconds_estimate"] == pytest.approx(100.0)
    assert atkit["tf32"] == {"cudnn": False} and "speedup_vs_reference" not in summary["reference"]


def test_reference_attack_is_atkits_attack():
    """Same start (same RNG draws), same steps: the released-style loop and atkit's pgd give the same images,
    and the reference leaves no parameter gradients behind (it clears them as the released code does)."""
    bench = _load("bench_at")
    from atkit.attacks import pgd
    from atkit.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, width=4, hidden=16).eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)
    torch.manual_seed(7)
    ref = bench.reference_pgd(model, x, y, 8 / 255, 2 / 255, 4)
    torch.manual_seed(7)
    ours = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=4, random_start="uniform", bn_mode="eval")
    torch.testing.assert_close(ref, ours, atol=1e-6, rtol=0)
    assert float((ref - x).abs().max()) > 4 / 255  # it moved beyond the start
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.parameters())


def test_reference_loader_serves_augmented_pil_batches():
    bench = _load("bench_at")
    x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(10)
    xb, yb = next(iter(bench.reference_loader(x, y, 4, train=False, workers=0, pin_memory=False)))
    torch.testing.assert_close(xb, x[:4].float() / 255)  # ToTensor of the PIL image: the same pixels
    assert yb.tolist() == [0, 1, 2, 3]
    xa, _ = next(iter(bench.reference_loader(x, y, 10, train=True, workers=0, pin_memory=False)))
    assert xa.shape == (10, 3, 32, 32) and xa.dtype == torch.float32


def test_parity_summary_applies_the_stated_criterion():
    parity = _load("parity")
    rows = [{"path": p, "test_clean_acc": c, "test_pgd20_acc": r}
            for p, c, r in (("fp32", 80.0, 40.0), ("fast", 81.0, 44.9), ("fp32", 82.0, 42.0), ("fast", 79.0, 45.0),
                            ("fp32", 81.0, 41.0), ("fast", 80.0, 45.1))]
    summary = parity.summarise(rows)
    clean = summary["test_clean_acc"]
    assert clean["difference"] == pytest.approx(80.0 - 81.0)
    assert clean["per_seed_difference"] == [1.0, -3.0, -1.0]
    se = (1.0 / 3 + 1.0 / 3) ** 0.5  # both stdevs are 1.0
    assert clean["two_standard_errors"] == pytest.approx(2 * se) and clean["within_noise"] is True
    assert summary["test_pgd20_acc"]["within_noise"] is False  # 45.0 vs 41.0, spreads 0.1 and 1.0


def test_committed_results_name_date_machine_and_command():
    files = sorted((BENCH_DIR / "results").glob("*.json"))
    assert files, "benchmarks/results/ must hold the measured CPU smoke run"
    for path in files:
        data = json.loads(path.read_text())
        assert data["date"] and data["command"].startswith("python benchmarks/"), path.name
        assert data["machine"]["cpu"] and data["machine"]["torch"], path.name




# ------------------------------------------------------------------------------------- the one-call GPU suite
SUITE = BENCH_DIR / "gpu_suite.sh"
# What the device machine has (benchmarks/README.md), plus pip, which the suite uses to install the wheel.
DEVICE_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scipy", "seaborn", "matplotlib", "tqdm", "PyYAML", "pip")


def _fake_cifar_archive(tmp_path: Path) -> Path:
    """A tiny CIFAR-like JPEG ImageFolder (2 classes, 24 train / 16 test images of 16x16) as a .tar.gz."""
    from PIL import Image

    root = tmp_path / "src" / "cifar10-jpeg"
    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 12), ("test", 8)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / c / f"{i:04d}.jpg", quality=90)
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar10-jpeg")
    return archive


def _run_suite(out: Path, *args: str, python: str = sys.executable, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), PYTHON=python, OMP_NUM_THREADS="1", WORK=str(out.parent / "work"),
               **env_extra)
    return subprocess.run(["bash", str(SUITE), *args], env=env, capture_output=True, text=True, timeout=300)


def _summary_block(stdout: str) -> str:
    return stdout[stdout.index("gpu_suite DRY"):]


def test_gpu_suite_dry_form_keeps_going_past_a_cut_step(tmp_path):
    """The CI form of the one-call GPU suite, as on the device: a CIFAR-like JPEG archive unpacked, a step cut by
    its time limit (compile, 1 s), then the training comparisons all the same; one JSON and one log; the summary
    assembled again from the files alone (--summarize, no torch)."""
    out = tmp_path / "out"
    proc = _run_suite(out, "--dry", "--steps", "compile,train", DATA_TAR=str(_fake_cifar_archive(tmp_path)),
                      LIMIT_compile="1")
    log = (out / "gpu_suite.log").read_text() if (out / "gpu_suite.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] + log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_suite.json", "gpu_suite.log"]  # the device returns <= 8
    data = json.loads((out / "gpu_suite.json").read_text())
    assert data["dry"] is True and data["data_root"].endswith("cifar10-jpeg") and data["machine"]["torch_threads"] == 1
    steps = data["steps"]
    assert steps["compile"]["status"] == "timeout" and "time limit (1 s)" in steps["compile"]["error"]
    assert steps["train"]["status"] == "ok", steps["train"]
    train = steps["train"]["results"]
    for label, tf32 in (("bf16", True), ("fp32", False), ("tf32", True)):
        row = train[label]
        ref, ours = row["paths"]["reference"], row["paths"]["atkit"]
        assert row["precision"] == label and ours["precision"] == label and row["epoch_images"] == 24  # real folder
        assert ref["tf32"] == ours["tf32"] == {"cudnn": tf32, "matmul": tf32}  # both sides, same switches
        assert ref["rounds"] == ours["rounds"] == 2 and ours["images"] == ref["images"] == 16
        assert ours["speedup_vs_reference"] == pytest.approx(statistics.median(ours["speedup_per_round"]))
        assert ours["process_cpu_seconds"] > 0 and ours["epoch_seconds_estimate"] > 0
    summary = _summary_block(proc.stdout)
    assert "compile timeout" in summary and summary.count("[1-2]") == 3 and "not judged" in summary
    again = subprocess.run(["bash", str(SUITE), "--summarize"], env=dict(os.environ, OUT=str(out)),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == summary


def _bare_site(folder: Path) -> Path:
    """A folder of symlinks to exactly DEVICE_PACKAGES and the distributions they require (no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    folder.mkdir()
    todo, seen = list(DEVICE_PACKAGES), set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here, so the device's environment cannot be copied")
        base = Path(dist.locate_file(""))
        for f in dist.files or []:
            top = f.parts[0]
            if top not in ("..", "__pycache__") and not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(base / top)
        todo += [Requirement(r).name for r in dist.requires or []
                 if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
    return folder


def test_gpu_suite_runs_on_a_bare_machine(tmp_path):
    """The device's environment simulated: a fresh interpreter (python -S) that sees only the listed packages and
    their own requirements, atkit from PYTHONPATH, pyautoattack as a wheel installed by the suite into a target
    folder. The wheel is built from the installed package (``gpu_suite.py prepare --from-installed``'s code; CI may
    have no network for ``pip download``). Every atkit module imports without papermill, ipywidgets, submitit,
    tensorboard and jupyter, and the AutoAttack step runs there."""
    suite = _load("gpu_suite")
    site = _bare_site(tmp_path / "site")
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S \"$@\"\n")
    python.chmod(0o755)
    wheel = suite.wheel_from_installed("pyautoattack", tmp_path / "whl")
    assert not any(n.startswith("pyautoattack/examples/") for n in zipfile.ZipFile(wheel).namelist())
    repo = BENCH_DIR.parent
    probe = ("import importlib, importlib.util, pkgutil, atkit; bad = {}\n"
             "for m in pkgutil.walk_packages(atkit.__path__, 'atkit.'):\n"
             "    if m.name != 'atkit.__main__':\n"
             "        try: importlib.import_module(m.name)\n"
             "        except Exception as e: bad[m.name] = repr(e)\n"
             "print(bad, [n for n in ('papermill', 'ipywidgets', 'submitit', 'tensorboard', 'jupyter', 'pyautoattack')"
             " if importlib.util.find_spec(n)], atkit.__file__)")
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{repo}", OMP_NUM_THREADS="1")
    imported = subprocess.run([str(python), "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.split() == ["{}", "[]", str(repo / "atkit" / "__init__.py")]

    out = tmp_path / "out"
    proc = _run_suite(out, "--dry", "--steps", "autoattack", python=str(python), PYTHONPATH=str(site),
                      WHEELS=str(tmp_path / "whl"))
    log = (out / "gpu_suite.log").read_text() if (out / "gpu_suite.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] + log[-3000:]
    data = json.loads((out / "gpu_suite.json").read_text())
    environment = data["environment"]
    assert environment["optional_packages_importable"] == dict.fromkeys(suite.OPTIONAL_PACKAGES, False)
    assert environment["pyautoattack"].startswith(str(tmp_path / "work" / "site"))  # the wheel, installed by the suite
    assert environment["atkit"] == str(repo / "atkit" / "__init__.py")
    aa = data["steps"]["autoattack"]
    assert aa["status"] == "ok", aa
    results = aa["results"]
    assert results["n"] == 16 and results["brief_training"]["steps"] >= 1
    for precision in ("fp32", "bf16", "tf32"):
        row = results[precision]
        assert row["robust"]["n"] == 16 and len(row["correct_bits"]) == 16 and row["seconds"] > 0
        assert row["robust"]["k"] == row["correct_bits"].count("1") and set(row["attack_progress"]) == {"apgd-ce"}
    for precision in ("bf16", "tf32"):
        parity = results[precision]["parity"]
        agree = sum(a == b for a, b in zip(results["fp32"]["correct_bits"], results[precision]["correct_bits"]))
        assert parity["n"] == 16 and parity["agreement"] == pytest.approx(100 * agree / 16)
        assert parity["parity"] is False  # 16 images cannot resolve half a point
    assert results["no_grad_probe"]["same_result"] in (True, False) and results["no_grad_probe"]["seconds_with_no_grad"] > 0
    assert "[3] model: small_cnn" in proc.stdout


def test_gpu_suite_profile_wide_and_parity_steps(tmp_path):
    """The steps not run through the shell above, in this process (the dry sizes): the WRN-34-10 stand-in's
    comparison, the profiler summary of both paths, and the optional training-parity step."""
    suite, steps = _load("gpu_suite"), _load("gpu_suite_steps")
    out = tmp_path / "out"
    out.mkdir()
    for name, run in (("wrn_profile", steps.step_wrn_profile), ("parity", steps.step_parity)):
        run(suite.StepContext(name, out, dry=True, deadline=time.time() + 600, data_root=None, work=tmp_path,
                              threads=1))
    results = suite.read_results(out)["steps"]
    wide = results["wrn_profile"]["results"]["wrn34_10"]["paths"]
    assert wide["atkit"]["speedup_vs_reference"] > 0 and wide["reference"]["tf32"] == wide["atkit"]["tf32"]
    for path in ("atkit", "reference"):
        prof = results["wrn_profile"]["results"]["profile"]["paths"][path]
        assert prof["wall_ms_per_step"] > 0 and prof["top_ops"] and prof["top_ops"][0]["self_ms"] > 0
        assert prof["device_busy_fraction"] is None  # no device timeline on the CPU
    parity = results["parity"]["results"]["parity"]
    assert set(parity["summary"]) == {"test_clean_acc", "test_pgd20_acc"} and len(parity["runs"]) == 4
    lines = "\n".join(suite.summary_lines(suite.read_results(out), out))
    assert "profile atkit" in lines and "[5] training parity" in lines
    # the busy time of a device timeline: overlapping kernels count once
    assert steps.union_length([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert steps.union_length([]) == 0


def test_gpu_suite_bookkeeping_without_torch(tmp_path):
    """mark and summarize need only the JSON and the log: a step killed by its limit, one that crashed, one left
    out for lack of time, and a call cut before any result; prepare's wheel slimming keeps RECORD true."""
    suite = _load("gpu_suite")
    out = tmp_path / "out"
    out.mkdir()
    assert "no gpu_suite.json" in suite.summary_lines({}, out)[0]
    suite.main(["init", "--out", str(out), "--dry", "--budget", "60"])
    suite.update_results(out, lambda d: suite.step_entry(d, "train").update(status="running"))
    (out / "gpu_suite.log").write_text("step output\nTraceback (most recent call last):\nRuntimeError: CUDA error: boom\n")
    suite.main(["mark", "train", "1", "--out", str(out), "--limit", "100"])
    suite.update_results(out, lambda d: suite.step_entry(d, "compile").update(status="running"))
    suite.main(["mark", "compile", "124", "--out", str(out), "--limit", "120"])
    suite.update_results(out, lambda d: suite.step_entry(d, "autoattack").update(status="partial"))
    suite.main(["mark", "autoattack", "0", "--out", str(out)])
    suite.main(["mark", "wrn_profile", "0", "--out", str(out), "--skipped", "5s left of the 60s budget"])
    steps = suite.read_results(out)["steps"]
    assert steps["train"]["status"] == "failed" and "CUDA error: boom" in steps["train"]["error"]
    assert steps["compile"]["status"] == "timeout" and steps["autoattack"]["status"] == "partial"
    assert steps["wrn_profile"] == {"limit_seconds": 0, "status": "skipped", "reason": "5s left of the 60s budget"}
    assert not list(out.glob("*.tmp"))
    text = "\n".join(suite.summary_lines(suite.read_results(out), out))
    assert "train failed" in text and "compile timeout" in text and "wrn_profile skipped" in text

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pyautoattack/examples/model_test.pt", b"\0" * 1000)
        z.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\nVersion: 1.0\n")
        z.writestr("pkg-1.0.dist-info/RECORD", "stale\n")
    suite.slim_wheel(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
        assert "pyautoattack/examples/model_test.pt" not in names
        assert sorted(line.split(",")[0] for line in record) == sorted(names)
        for line in record:
            name, digest, size = line.split(",")
            if digest:
                assert digest == suite._record_hash(z.read(name)) and int(size) == len(z.read(name))

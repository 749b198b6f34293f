"""The benchmark scripts in their CPU smoke form: they run, time both loops, and write what they claim.

No timing is asserted (shared CPUs); the tests check the plumbing and that the reference loop's attack is the
same attack as atkit's, so the comparison is like for like.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"atkit_bench_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_both_loops(tmp_path):
    bench = _load("bench_at")
    out = tmp_path / "smoke.json"
    results = bench.main(["--device", "cpu", "--model", "small_cnn", "--batch-size", "8", "--steps", "1",
                          "--warmup", "1", "--attack-steps", "2", "--eval-n", "16", "--skip-aa",
                          "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["command"].startswith("python benchmarks/bench_at.py --device cpu")
    assert written["date"] and written["machine"]["cpu_cores"] >= 1 and written["machine"]["torch"]
    train = written["train"]
    assert set(train) == {"reference", "atkit"}
    for row in train.values():
        assert row["images"] == 8 and row["seconds"] > 0 and row["images_per_s"] > 0
    assert train["atkit"]["speedup_vs_reference"] == pytest.approx(
        train["atkit"]["images_per_s"] / train["reference"]["images_per_s"])
    assert train["atkit"]["fast_path"]["precision"] == "fp32"  # "auto" on the CPU is the exact path
    ev = written["eval"]
    assert set(ev) == {"atkit_pgd20_fp32", "reference_pgd20"}  # --skip-aa
    assert ev["atkit_pgd20_fp32"]["images"] == 16 and 0.0 <= ev["atkit_pgd20_fp32"]["accuracy"] <= 100.0
    assert results["train"].keys() == train.keys()


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


def test_gpu_suite_dry_form_runs_every_step(tmp_path):
    """benchmarks/gpu_suite.sh --dry: every step of the one-call GPU suite on the CPU at tiny sizes, one JSON."""
    import os
    import subprocess

    out = tmp_path / "suite"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(BENCH_DIR / "gpu_suite.sh"), "--dry"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:] + (out / "gpu_suite.log").read_text()[-2000:]
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["dry"] is True and summary["machine"]["cpu_cores"] >= 1
    figures = summary["figures"]
    for key in ("resnet18_epoch_s", "resnet18_speedup", "wrn34_10_epoch_s", "aa_10k_s"):
        assert figures[key] > 0, key
        assert summary["targets"][key]["met"] is None  # a dry run judges no target
    assert summary["aa"]["images"] == 16 and 0.0 <= summary["aa"]["robust_acc"] <= 100.0
    assert summary["aa"]["seconds_10k_extrapolated"] == pytest.approx(summary["aa"]["seconds"] * 10000 / 16)
    assert set(summary["parity_summary"]) >= {"test_clean_acc", "test_pgd20_acc"}
    assert "gpu_suite (dry form" in proc.stdout and "aa_10k_s" in proc.stdout

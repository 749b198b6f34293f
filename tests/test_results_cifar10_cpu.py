"""results/cifar10-cpu: every number of its README is the one in summary.json, and summary.json is what the
committed run files give (results/cifar10-cpu/build.py recomputed here on those files)."""
from __future__ import annotations

import importlib.util
import json
import math

from helpers import REPO

HERE = REPO / "results" / "cifar10-cpu"


def _build():
    spec = importlib.util.spec_from_file_location("atkit_results_cifar10_cpu", HERE / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_summary_is_what_the_committed_run_files_give():
    committed = json.loads((HERE / "summary.json").read_text())
    recomputed = json.loads(json.dumps(_build().summarise(HERE), sort_keys=True))
    assert _same(recomputed, committed)


def test_readme_is_rendered_from_the_summary():
    build = _build()
    summary = json.loads((HERE / "summary.json").read_text())
    assert (HERE / "README.md").read_text() == build.render(summary)
    assert "{{section" not in (HERE / "README.md").read_text()


def test_mse_verdicts_follow_the_intervals():
    mse = json.loads((HERE / "summary.json").read_text())["mse_perception"]
    assert mse is not None, "the MSE-perception run is committed"
    for pair in mse["pairs"]:
        if "ci95" not in pair:
            continue
        low, high = pair["ci95"]
        assert low <= pair["failure_minus_success"] <= high
        if low <= 0 <= high:
            assert pair["verdict"] == "inconclusive within noise"


def test_benchmarks_precision_table_is_rendered_from_the_summary():
    build = _build()
    summary = json.loads((HERE / "summary.json").read_text())
    readme = build.BENCHMARKS_README.read_text()
    assert build.render_benchmarks_block(summary, readme) == readme


def test_bf16_default_is_the_measured_decision():
    """atkit.fast.BF16_VERIFIED_METHODS is exactly the set the committed parity runs accept, rule recomputed."""
    from atkit import fast

    prec = json.loads((HERE / "summary.json").read_text())["precision"]
    if prec is None:
        assert fast.BF16_VERIFIED_METHODS == frozenset(), "no parity runs committed: every method trains in fp32"
        return
    for entry in prec["methods"]:
        seeds = entry["seeds"]
        pick = {p: {m: [entry["per_seed"][str(s)][p][m]["acc"] for s in seeds] for m in prec["metrics"]}
                for p in ("bf16", "fp32")}
        assert fast.bf16_parity_decision(pick["bf16"], pick["fp32"]) == entry["decision"]
    assert fast.BF16_VERIFIED_METHODS == frozenset(prec["bf16_default"])


def test_project_readme_verdicts_are_rendered_from_the_summary():
    build = _build()
    summary = json.loads((HERE / "summary.json").read_text())
    readme = build.PROJECT_README.read_text()
    assert build.render_readme_block(summary, readme) == readme
    assert "does not reproduce" in build.render_verdicts(summary)  # the MSE-perception row is committed


def test_collect_keeps_no_checkout_path_and_cites_the_paper(tmp_path):
    """collect copies a notebook's files with the checkout's absolute path removed from every JSON/CSV, and a
    run made before the notebooks cited papers by name gets the figure's citation as its source."""
    build = _build()
    checkout = tmp_path / "checkout"
    nb = checkout / "outputs" / "cpu" / "boundary_samples"
    nb.mkdir(parents=True)
    run = f"{checkout.resolve()}/outputs/cpu/runs/boundary_budget-s0"
    (nb / "metrics.json").write_text(json.dumps({"experiment": "boundary_samples", "source": "an internal label",
                                                 "run": run}))
    (nb / "budget_sweep.csv").write_text(f"variant,run_dir\nb=0,{run}\n")
    into = tmp_path / "results"
    build.collect(checkout / "outputs" / "cpu", into=into)
    copied = into / "runs" / "boundary_samples"
    metrics = json.loads((copied / "metrics.json").read_text())
    assert metrics["source"] == build.SOURCES["boundary_samples"]
    assert metrics["run"] == "outputs/cpu/runs/boundary_budget-s0"
    assert str(tmp_path) not in (copied / "budget_sweep.csv").read_text()
    assert "outputs/cpu/runs/boundary_budget-s0" in (copied / "budget_sweep.csv").read_text()

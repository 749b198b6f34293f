"""train, ablation and results notebooks under papermill with their smoke parameters, and the library code
behind them: run collection, aggregation over seeds, the published-number reference and the comparison."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from atkit.experiments import reference
from atkit.workbench.notebooks import run_notebook
from atkit.methods import get_method
from atkit.workbench.plots import tradeoff_figure
from atkit.workbench.results import aggregate_seeds, collect_runs, compare_with_reference, comparison_display, paper_table, tradeoff_points
from atkit.workbench.run_labels import setting_label
from atkit.training.runs import run_config_from
from helpers import figure_outputs

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ the three notebooks
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """train, then ablation (same runs folder), then results over that folder: smoke parameters, CPU."""
    tmp = tmp_path_factory.mktemp("nb")
    runs = tmp / "runs"
    outs = {}
    for name, extra in (("train", {"runs_dir": str(runs)}), ("ablation", {"runs_dir": str(runs)}),
                        ("results", {"outputs_dir": str(runs), "query": "epochs >= 1"})):  # keeps all three
        outs[name] = tmp / name
        run_notebook(name, str(ROOT / "parameters" / "smoke" / f"{name}.yaml"), str(outs[name]), device="cpu",
                     extra=extra, progress=False)
    return {"runs": runs, **outs}


def test_train_notebook_writes_curves_and_final_evaluation_into_the_run(executed):
    out = executed["train"]
    assert (out / "train.ipynb").is_file() and (out / "learning_curves.png").stat().st_size > 1000
    summary = json.loads((out / "metrics.json").read_text())
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "finished" and summary["how"] == "new" and summary["epochs_done"] == 1
    assert run_dir.parent == executed["runs"]
    assert figure_outputs(out / "train.ipynb") == (1, 0)  # the learning curves, shown once as an image
    for name in ("eval.json", "metrics.json", "learning_curves.png", "final_eval.csv", "config.yaml"):
        assert (run_dir / name).is_file(), name
    final_eval = pd.read_csv(out / "final_eval.csv")
    assert sorted(final_eval["checkpoint"]) == ["best", "final"]
    ev = json.loads((run_dir / "eval.json").read_text())
    for rec in final_eval.to_dict(orient="records"):
        acc = ev[rec["checkpoint"]]["accuracy"]
        assert rec["clean"] == pytest.approx(acc["clean"]) and rec["pgd2"] == pytest.approx(acc["pgd2"])
        assert rec["mean"] == pytest.approx((acc["clean"] + acc["pgd2"]) / 2)
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1] and {"train_loss", "test_clean_acc", "test_pgd2_acc"} <= set(history)
    assert summary["published"] == []  # synthetic data: no published number for it


def test_ablation_notebook_runs_every_grid_point_headless(executed):
    out = executed["ablation"]
    table = pd.read_csv(out / "ablation.csv")
    assert list(table["param:rp_distance"]) == ["mse", "kl"]
    assert (table["status"] == "finished").all() and (table["method"] == "pgd_at+rpat").all()
    assert table["final_clean"].between(0, 100).all() and table["final_pgd2"].between(0, 100).all()
    assert table["run_dir"].nunique() == 2
    # The logits row of RPAT, Table 5 is PGD-AT+RPAT with default hyperparameters: shown beside the mse point only.
    assert table.loc[0, "paper_clean"] == 83.20 and table.loc[0, "paper_aa"] == 48.00
    assert math.isnan(table.loc[1, "paper_clean"])
    for name in ("ablation.png", "tradeoff.png", "ablation.ipynb"):
        assert (out / name).stat().st_size > 1000, name
    assert figure_outputs(out / "ablation.ipynb") == (2, 0)  # inline images, not "<Figure size ...>" text
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["varied"] == ["rp_distance"] and summary["n_runs"] == 2 and summary["n_failed"] == 0


def test_results_notebook_tabulates_every_run_and_shows_missing_published_rows(executed):
    out = executed["results"]
    runs = pd.read_csv(out / "runs.csv")
    assert runs["run_dir"].nunique() == 3  # train's pgd_at run and the ablation's two
    table = pd.read_csv(out / "paper_table.csv")
    assert sorted(table["label"]) == ["pgd_at", "pgd_at+rpat", "pgd_at+rpat (rp_distance=kl)"]
    assert set(table["status"]) == {"finished x1"}
    comparison = pd.read_csv(out / "comparison.csv")
    t1 = comparison[comparison["table"] == "Table 1"]
    assert len(t1) == len(reference.select(["RPAT / Table 1"], dataset="cifar10"))
    assert (t1["status"] == "missing").all()  # the smoke runs are on synthetic data
    not_ours = comparison[comparison["table"] == "Table 2"]
    # DUCAT, Table 2: 15 SOTAs atkit does not train; its two DUCAT rows and AWP (pgd_at+awp) are missing here.
    assert (not_ours["status"] == "not in atkit").sum() == 15 and (not_ours["status"] == "missing").sum() == 3
    display = pd.read_csv(out / "comparison_display.csv")
    assert display["Clean"].str.startswith("missing /").all()
    points = pd.read_csv(out / "tradeoff_points.csv")
    # Synthetic-data runs: the papers' CIFAR-10 points are not set beside them.
    assert (points["who"] == "this workbook").sum() == 3 and (points["who"] == "published").sum() == 0
    assert points["label"].nunique() == 3 and points["label"].str.contains("synthetic n_train=128 n_test=32").all()
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert figure_outputs(out / "results.ipynb") == (1, 0)
    assert json.loads((out / "metrics.json").read_text())["n_runs"] == 3
    printed = "".join("".join(o.get("text", "")) for c in json.loads((out / "results.ipynb").read_text())["cells"]
                      if c["cell_type"] == "code" for o in c["outputs"])
    assert "where epochs >= 1" in printed  # the query parameter was applied (papermill used to drop its line)
    # Both ablation runs (pgd_at+rpat, mse and kl) paired with train's pgd_at run: same data, model, seed, images.
    paired = pd.read_csv(out / "paired_tests.csv")
    assert len(paired) == 2 and set(paired["base"]) == {"pgd_at"} and paired["note"].isna().all()
    assert paired["McNemar p"].between(0, 1).all() and (paired["n"] == 32).all()
    assert json.loads((out / "metrics.json").read_text())["n_paired"] == 2


# --------------------------------------------------------------------------------------- results.py
def _fake_run(root: Path, name: str, config: dict, evals: dict, status: str = "finished", history=None):
    """A run folder as the trainer writes it, with chosen numbers."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps({"status": status, "best_epoch": 3, "history": history or [{}]}))
    if evals:
        payload = {}
        for ckpt, acc in evals.items():
            rob = "aa" if "aa" in acc else "pgd20"
            payload[ckpt] = {"format": "atkit-eval/1", "n": 100, "accuracy": acc, "robust_metric": rob,
                             "mean": (acc["clean"] + acc[rob]) / 2,
                             "nrr": 2 * acc["clean"] * acc[rob] / (acc["clean"] + acc[rob])}
        payload["best_epoch"] = 3
        (run / "eval.json").write_text(json.dumps(payload))
    return run


CIFAR_RPAT = {"method": "pgd_at+rpat", "method_params": {"rp_lambda": 1.0}, "dataset": "folder",
              "data": {"root": "data/cifar10-jpeg"}, "model": "resnet18", "schedule": "pang110",
              "threat": {"norm": "linf"}}


def test_seeds_are_aggregated_and_set_beside_the_published_row(tmp_path):
    cleans, aas = [83.0, 84.0, 82.5], [47.0, 48.5, 46.0]
    for seed, (c, a) in enumerate(zip(cleans, aas)):
        _fake_run(tmp_path / "outputs" / "runs", f"r{seed}", dict(CIFAR_RPAT, seed=seed),
                  {"best": {"clean": c, "pgd20": 50.0 + seed, "aa": a}, "final": {"clean": c - 1, "pgd20": 49.0,
                                                                                  "aa": a - 1}})
    # A different setting (another distance), an unfinished run (no eval.json) and an unrelated file tree.
    _fake_run(tmp_path / "outputs" / "sweeps" / "p1" / "runs", "other",
              dict(CIFAR_RPAT, method_params={"rp_distance": "kl"}, seed=0), {"best": {"clean": 80.0, "aa": 45.0}})
    _fake_run(tmp_path / "outputs" / "runs", "half", dict(CIFAR_RPAT, method="pgd_at", method_params={}, seed=0), {},
              status="stopped", history=[{"epoch": 1, "test_clean_acc": 40.0, "test_pgd20_acc": 20.0}])
    (tmp_path / "outputs" / "demo").mkdir()

    runs = collect_runs(tmp_path / "outputs")
    assert runs["run_dir"].nunique() == 5
    half = runs[runs["run"] == "half"].iloc[0]
    assert half["checkpoint"] == "last epoch" and half["clean"] == 40.0 and half["pgd20"] == 20.0
    assert half["status"] == "stopped" and half["mean"] == 30.0

    agg = aggregate_seeds(runs)
    best = agg[(agg["label"] == "pgd_at+rpat") & (agg["checkpoint"] == "best")].iloc[0]
    assert best["n_seeds"] == 3 and best["seeds"] == [0, 1, 2]
    assert best["clean"] == pytest.approx(sum(cleans) / 3)
    mean_c = sum(cleans) / 3
    assert best["clean_std"] == pytest.approx(math.sqrt(sum((c - mean_c) ** 2 for c in cleans) / 2))
    nrrs = [2 * c * a / (c + a) for c, a in zip(cleans, aas)]
    assert best["nrr"] == pytest.approx(sum(nrrs) / 3)  # the mean of per-seed NRR, as the papers average runs

    table = paper_table(agg)
    row = table[table["label"] == "pgd_at+rpat"].iloc[0]
    assert row["Clean best"] == f"{mean_c:.2f} ± {best['clean_std']:.2f}" and row["seeds"] == 3
    assert row["AA final"].startswith(f"{sum(aas) / 3 - 1:.2f} ±")
    stopped = table[table["label"] == "pgd_at"].iloc[0]
    assert stopped["Clean best"] == "missing" and stopped["Clean final"] == "40.00" and stopped["AA final"] == "n/a"
    # Mean/NRR name the attack behind them: AutoAttack for the finished runs, the last epoch's PGD-20 for the stopped.
    assert row["Mean/NRR by"] == "AA" and stopped["Mean/NRR by"] == "PGD-20"

    refs = reference.select(["RPAT / Table 1"], dataset="cifar10")
    comparison = compare_with_reference(agg, refs)
    hit = comparison[(comparison["row"] == "CIFAR-10 PGD-AT +RPAT") & (comparison["checkpoint"] == "best")].iloc[0]
    assert hit["label"] == "pgd_at+rpat" and hit["n_seeds"] == 3 and hit["data_variant"] == "jpeg"
    assert hit["paper_aa"] == 48.00 and hit["ours_aa"] == pytest.approx(sum(aas) / 3)
    assert hit["diff_clean"] == pytest.approx(mean_c - 83.20)
    final = comparison[(comparison["row"] == "CIFAR-10 PGD-AT +RPAT") & (comparison["checkpoint"] == "final")]
    assert final.iloc[0]["ours_clean"] == pytest.approx(mean_c - 1)
    # rp_distance=kl is another setting: it matches no row. Unrun settings are listed as missing, not dropped.
    assert "pgd_at+rpat (rp_distance=kl)" not in set(comparison["label"].dropna())
    assert (comparison["status"] == "missing").sum() == len(refs) - 2  # only the 2 PGD-AT+RPAT rows are matched
    base = comparison[(comparison["row"] == "CIFAR-10 PGD-AT")].iloc[0]
    assert base["status"] == "missing"  # the stopped PGD-AT run has no best checkpoint to compare
    shown = comparison_display(comparison)
    assert shown.iloc[1]["AA"].endswith("/ 48.00")

    points = tradeoff_points(agg, reference.select(["DUCAT / Table 2"]))
    ours = points[points["who"] == "this workbook"]
    assert sorted(label.split(" | ")[0] for label in ours["label"]) == ["pgd_at+rpat", "pgd_at+rpat (rp_distance=kl)"]
    assert (points["who"] == "published").sum() == 18


def test_tradeoff_scatter_keeps_published_points_beside_their_own_setting_one_attack_per_axis(tmp_path):
    """Published points only beside runs of the same dataset, model family and threat model; one panel per
    (threat model, robust attack), both named; every point numbered once; settings never share a label."""
    root = tmp_path / "outputs"
    _fake_run(root, "cifar_aa", dict(CIFAR_RPAT, seed=0), {"best": {"clean": 83.0, "pgd20": 50.0, "aa": 47.0}})
    _fake_run(root, "cifar_pgd", dict(CIFAR_RPAT, method="pgd_at", method_params={}, seed=0),
              {"best": {"clean": 82.0, "pgd20": 51.0}})  # no AutoAttack: its own PGD-20 panel
    _fake_run(root, "cifar_l2", dict(CIFAR_RPAT, threat={"norm": "l2", "eps": 0.5}, seed=0),
              {"best": {"clean": 88.0, "pgd20": 70.0, "aa": 68.0}})
    for n_train in (128, 256):  # two synthetic settings that differ only in the data size
        _fake_run(root, f"syn{n_train}", {"method": "pgd_at", "dataset": "synthetic", "data": {"n_train": n_train},
                                          "model": "small_cnn", "seed": 0}, {"best": {"clean": 60.0, "aa": 40.0}})
    _fake_run(root / "smoke" / "runs", "tiny", dict(CIFAR_RPAT, seed=0), {"best": {"clean": 10.0, "aa": 9.0}})
    runs = collect_runs(root, exclude=["smoke"])
    assert runs["run_dir"].nunique() == 5 and collect_runs(root)["run_dir"].nunique() == 6
    agg = aggregate_seeds(runs)
    assert agg["run_label"].nunique() == agg["setting"].nunique() == 5
    syn = sorted(agg.loc[agg["dataset"] == "synthetic", "run_label"].unique())
    assert syn[0].startswith("pgd_at | synthetic n_train=128") and syn[1].startswith("pgd_at | synthetic n_train=256")
    assert any("l2 127.5/255" in label for label in agg["run_label"])

    refs = reference.select(["DUCAT / Table 2", "RPAT / Table 1", "RPAT / Table 2"])
    points = tradeoff_points(agg, refs)
    published = points[points["who"] == "published"]
    assert set(published["dataset"]) == {"cifar10"} and set(published["model"]) == {"ResNet-18"}
    for (threat, metric), group in published.groupby(["threat", "robust_metric"]):
        norm = "l2" if threat.startswith("l2") else "linf"
        expected = {(r.source, r.table, r.row) for r in refs if r.norm == norm and r.dataset == "cifar10"
                    and r.model == "ResNet-18" and "clean" in r.values and metric in r.values}
        assert (group["norm"] == norm).all() and len(group) == len(expected) and group["label"].is_unique
    assert set(zip(published["threat"], published["robust_metric"])) <= set(
        zip(points.loc[points["who"] == "this workbook", "threat"], points.loc[points["who"] == "this workbook",
                                                                                "robust_metric"]))
    assert not published[published["threat"] == "linf 8/255"].empty
    ours = points[points["who"] == "this workbook"]
    assert sorted(ours["robust_metric"]) == ["aa", "aa", "aa", "aa", "pgd20"]
    assert list(points["key"]) == list(range(1, len(points) + 1))

    fig = tradeoff_figure(points)
    panels = [ax for ax in fig.axes if ax.get_ylabel()]
    expected_panels = list(dict.fromkeys(zip(points["threat"], points["robust_metric"])))
    assert len(panels) == len(expected_panels) >= 3
    for ax, (threat, metric) in zip(panels, expected_panels):
        assert ax.get_ylabel().endswith({"aa": "AutoAttack", "pgd20": "PGD-20"}[metric]) and threat in ax.get_title()
        keys = sorted(int(t.get_text()) for t in ax.texts if t.get_text().isdigit())
        sub = points[(points["threat"] == threat) & (points["robust_metric"] == metric)]
        assert keys == sorted(sub["key"])  # each point of the panel numbered once


def test_run_config_from_applies_parameters_over_a_paper_config(tmp_path):
    paper = ROOT / "parameters" / "paper" / "pgd_at+rpat_cifar10_resnet18.yaml"
    cfg = run_config_from(paper, epochs=2, seed=None, eval={"n_test": 10}, overrides={"device": "cpu"})
    original = yaml.safe_load(paper.read_text())
    assert cfg.method == original["method"] and cfg.epochs == 2 and cfg.device == "cpu"
    assert cfg.eval.n_test == 10 and cfg.eval.final_attacks == original["eval"]["final_attacks"]  # eval merged
    assert setting_label("pgd_at+rpat", {"rp_distance": "kl", "rp_lambda": 1.0}) == "pgd_at+rpat (rp_distance=kl)"


# ------------------------------------------------------------------------------------- reference.py
def test_published_mean_and_nrr_agree_with_their_clean_and_aa():
    """Transcription check: Mean = (Clean + AA)/2 and NRR = 2 Clean AA/(Clean + AA), as printed (3 decimals)."""
    checked = 0
    for r in reference.REFERENCES:
        v = r.values
        if {"clean", "aa", "mean", "nrr"} <= set(v):
            assert (v["clean"] + v["aa"]) / 2 == pytest.approx(v["mean"], abs=6e-3), (r.key, r.row)
            assert 2 * v["clean"] * v["aa"] / (v["clean"] + v["aa"]) == pytest.approx(v["nrr"], abs=6e-3), (r.key, r.row)
            checked += 1
    assert checked >= 60


def test_every_reference_names_its_source_and_a_buildable_setting():
    keys = reference.table_keys()
    for k in ("RPAT / Table 1", "RPAT / Table 2", "RPAT / Table 3", "RPAT / Table 4",
              "RAAT / Table 5", "DUCAT / Table 1", "DUCAT / Table 2", "DUCAT / Table 3",
              "DUCAT / Table 4", "FAIT/MER / Table 1", "FAIT/MER / Table 2", "FAIT/MER / Table 3",
              "FAIT/MER / Table 4", "FAIT/MER / Table 5", "FAIT/MER / Table 6", "RPAT / Table 5"):
        assert k in keys
    for r in reference.REFERENCES:
        assert r.source in reference.PAPERS and r.table.startswith("Table ") and r.row
        assert r.checkpoint in ("best", "final") and r.values
        assert set(r.values) <= set(reference.METRICS)
        assert all(0 < v < 100 for v in r.values.values())
        if r.method is not None:
            get_method(r.method, None, **r.method_params)  # a registered method that accepts these settings
    cifar10 = reference.select(["rpat/1"], dataset="cifar10")
    assert len(cifar10) == 12  # 4 benchmarks (best) + 4 RPAT rows at best and final


@pytest.mark.parametrize("key,row,checkpoint,metric,value", [
    ("RPAT / Table 1", "CIFAR-10 Consistency-AT +RPAT", "best", "aa", 48.98),
    ("RPAT / Table 1", "CIFAR-10 MART +RPAT", "final", "clean", 75.95),
    ("RPAT / Table 2", "CIFAR-10 TRADES", "best", "pgd20", 68.60),
    ("RAAT / Table 5", "CIFAR-10 RAAT++", "best", "cw", 69.07),
    ("DUCAT / Table 1", "CIFAR-10 PGD-AT +DUCAT", "best", "aa", 58.61),
    ("DUCAT / Table 4", "MART +DUCAT", "best", "pgd10_targeted_dummy", 72.89),
    ("FAIT/MER / Table 2", "FAIT, lambda = 12, I = 3", "best", "clean", 80.57),
    ("FAIT/MER / Table 6", "FAIT_{psi=S}, lambda = 8", "best", "aa", 49.48),
])
def test_spot_values_as_printed(key, row, checkpoint, metric, value):
    hits = [r for r in reference.select([key]) if r.row == row and r.checkpoint == checkpoint]
    assert len(hits) >= 1 and hits[0].values[metric] == value


def test_matching_uses_resolved_hyperparameters():
    fait_t2 = {r.row: r for r in reference.select(["FAIT/MER / Table 2"])}
    i2 = fait_t2["FAIT, lambda = 12, I = 2"]
    # FAIT's defaults are lambda 12, I 2: an empty or explicit setting matches, logging switches do not matter.
    assert reference.matches(i2, method="fait", method_params={})
    assert reference.matches(i2, method="fait", method_params={"lam": 12.0, "log_r": True})
    assert not reference.matches(i2, method="fait", method_params={"interpolation_step": 3})
    assert not reference.matches(i2, method="fait", method_params={}, model="preact_resnet18")
    assert not reference.matches(i2, method="fait", method_params={}, schedule="pang110")
    ducat = [r for r in reference.select(["DUCAT / Table 1"], dataset="cifar10") if r.method == "trades+ducat"][0]
    assert reference.matches(ducat, method="trades+ducat", method_params={"lam": 6.0, "beta1": 0.75})
    assert not reference.matches(ducat, method="trades+ducat", method_params={"lam": 9.0})  # the base's lambda counts


# ----------------------------------------------------------------------------------- parameter files
def test_every_parameter_file_of_the_three_notebooks_is_valid():
    """Names the notebooks declare, configs that load, points that build a RunConfig, sweeps that expand."""
    import papermill as pm

    from atkit.workbench.sweep import check_parameters, load_grid, make_points
    from atkit.workbench.notebooks import resolve_notebook
    from atkit.workbench.ablation import AblationSession

    declared = {n: set(pm.inspect_notebook(str(ROOT / "notebooks" / f"{n}.ipynb"))) for n in
                ("train", "ablation", "results")}
    params = ROOT / "parameters"
    files = {"train": [params / "smoke" / "train.yaml", params / "demo" / "train.yaml",
                       *sorted((params / "paper" / "train").glob("*.yaml"))],
             "ablation": [params / "smoke" / "ablation.yaml", params / "demo" / "ablation.yaml",
                          *sorted((params / "paper" / "ablation").glob("*.yaml"))],
             "results": [params / "smoke" / "results.yaml", params / "demo" / "results.yaml",
                         params / "paper" / "results.yaml"]}
    assert len(files["train"]) > 30 and len(files["ablation"]) >= 15
    for notebook, paths in files.items():
        for path in paths:
            p = yaml.safe_load(path.read_text()) or {}
            assert set(p) <= declared[notebook], (path, set(p) - declared[notebook])
            if notebook == "train":
                cfg = run_config_from(p.get("config") and ROOT / p["config"], **{k: v for k, v in p.items() if k in (
                    "method", "method_params", "dataset", "data", "model", "threat", "epochs", "eval")})
                assert cfg.method
            if notebook == "ablation":
                from atkit.workbench.sweep import expand_grid

                base = run_config_from(p.get("config") and ROOT / p["config"], overrides=p.get("base") or {})
                session = AblationSession(base.to_dict(), runs_dir="unused")
                for point in expand_grid(p.get("grid") or None, p.get("points")):
                    session.config_for(point)  # raises for a bad hyperparameter name or value
            for table in p.get("reference_tables") or []:
                assert reference.select([table])
    for path in [params / "demo" / "ablation_sweep.yaml", *sorted((params / "paper" / "sweeps").glob("*.yaml"))]:
        spec = load_grid(path)
        points = make_points(spec)
        check_parameters(resolve_notebook(spec.notebook), points)
        assert len({p.folder for p in points}) == len(points)


def test_dummy_class_runs_show_the_adaptive_protocol_beside_the_published_one(tmp_path):
    run = _fake_run(tmp_path, "ducat", dict(CIFAR_RPAT, method="pgd_at+ducat", method_params={}, schedule="ducat130",
                                            seed=0), {})
    published = {"format": "atkit-eval/1", "n": 10, "accuracy": {"clean": 88.0, "aa": 58.0}, "robust_metric": "aa",
                 "mean": 73.0, "nrr": 69.9, "protocol": "published"}
    adaptive = dict(published, accuracy={"clean": 88.0, "aa": 41.0}, protocol="adaptive")
    entry = dict(published, protocols={"published": published, "adaptive": adaptive})
    (run / "eval.json").write_text(json.dumps({"best": entry, "final": entry, "best_epoch": 3}))
    agg = aggregate_seeds(collect_runs(tmp_path))
    assert set(agg["protocol"]) == {"published", "adaptive"}
    row = paper_table(agg).iloc[0]
    # One seed: the accuracy with its 95 % Wilson interval on the n = 10 images (atkit.core.stats).
    assert row["AA best"] == "58.00 [31.3, 83.2]" and row["AA best (adaptive)"] == "41.00 [16.8, 68.7]"
    assert row["protocol"] == "published" and row["n"] == 10
    ref = [r for r in reference.select(["DUCAT / Table 1"], dataset="cifar10") if r.method == "pgd_at+ducat"]
    hit = compare_with_reference(agg, ref).iloc[0]
    assert hit["ours_aa"] == 58.0 and hit["paper_aa"] == 58.61  # the published protocol against the published number

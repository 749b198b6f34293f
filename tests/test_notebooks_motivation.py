"""The boundary-sample and always-failed-overlap notebooks run under papermill with their smoke
parameters, and every file they promise is there and consistent with the others; below them, the
boundary_budget method and the analysis helpers the notebooks use, recomputed by hand."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from atkit.experiments.measures import CrossAttack, boundary_partition, confusion_matrix
from atkit.attacks import pgd
from atkit.data import load_dataset
from atkit.methods import StepContext, get_method
from atkit.experiments.claims import NOT_LEARNED, model_learned
from helpers import REPO, TinyNet, figure_outputs, run_smoke_notebook, tiny_batch

ROOT = Path(__file__).resolve().parent.parent


def _results_build():
    """results/cifar10-cpu/build.py as a module (it recomputes the notebooks' verdicts from their files)."""
    spec = importlib.util.spec_from_file_location("atkit_results_build", REPO / "results" / "cifar10-cpu" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params(name):
    return yaml.safe_load((ROOT / "parameters" / "smoke" / f"{name}.yaml").read_text())


def _png_ok(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def _is_accuracy_of(values, n):
    """Percentages in [0, 100] that are whole multiples of 100 / n."""
    return all(0 <= v <= 100 and abs(v * n / 100 - round(v * n / 100)) < 1e-6 for v in values)


def test_boundary_samples_notebook(tmp_path):
    p = _params("boundary_samples")
    out = run_smoke_notebook("boundary_samples", tmp_path, progress=True)
    assert (out / "boundary_samples.ipynb").is_file()
    # Progress under papermill is text that stays in the executed notebook: one line per epoch and per evaluated
    # variant, and no widget bar (saved widgets show as dead "0 %" bars).
    executed = json.loads((out / "boundary_samples.ipynb").read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert "epoch 2/2  loss " in text and "test clean " in text
    assert "evaluated 1/" in text and "\r" not in text
    for png in ("boundary_fraction", "boundary_partition", "budget_sweep", "eta_sweep"):
        assert _png_ok(out / f"{png}.png"), png
    metrics = json.loads((out / "metrics.json").read_text())
    n_eval = metrics["n_eval"]
    assert n_eval == p["n_eval"]
    # The per-image flags behind the paired intervals: one per test image, agreeing with each variant's accuracy,
    # and enough for results/cifar10-cpu/build.py to recompute the notebook's verdicts from the files alone.
    flags = json.loads((out / "per_image_correct.json").read_text())
    for row in metrics["variants"]:
        for metric in ("clean_acc", "aa_acc"):
            f = flags[row["variant"]][metric]
            assert len(f) == n_eval and 100.0 * f.count("1") / n_eval == pytest.approx(row[metric])
    assert ([(c["verdict"], c["measured"]) for c in _results_build().summarise_boundary(out)["checks"]]
            == [(c["verdict"], c["measured"]) for c in metrics["checks"]])

    # Variants: both budget axes (the other group at eps) and the eta sweep with boundary samples at scale eta.
    budget = pd.read_csv(out / "budget_sweep.csv")
    scales = sorted(set(p["budget_scales"]) | {1.0})
    expected = {(s, 1.0) for s in scales} | {(1.0, s) for s in scales}
    assert set(zip(budget["boundary_scale"], budget["nonboundary_scale"])) == expected
    assert (budget["eta"] == 0.1).all()
    eta_sweep = pd.read_csv(out / "eta_sweep.csv")
    assert sorted(eta_sweep["eta"]) == sorted(p["eta_values"])
    assert (eta_sweep["boundary_scale"] == eta_sweep["eta"]).all() and (eta_sweep["nonboundary_scale"] == 1.0).all()
    for table in (budget, eta_sweep):
        for col in ("clean_acc", "pgd_acc", "aa_acc"):
            assert _is_accuracy_of(table[col], n_eval), col
    n_variants = len(metrics["variants"])
    assert n_variants == len(expected) + len(p["eta_values"])

    # The boundary fraction over epochs comes from each run's own metrics: one row per variant and epoch,
    # three groups that partition the samples, and the share of clean-correct samples consistent with them.
    frac = pd.read_csv(out / "boundary_fraction.csv")
    assert len(frac) == n_variants * p["epochs"]
    assert sorted(frac["epoch"].unique()) == list(range(1, p["epochs"] + 1))
    groups = frac[["train_boundary_frac", "train_nonboundary_frac", "train_misclassified_frac"]]
    assert ((groups >= 0) & (groups <= 1)).all().all()
    assert (groups.sum(axis=1) - 1).abs().max() < 1e-9
    correct = frac["train_boundary_frac"] + frac["train_nonboundary_frac"]
    has_correct = correct > 0
    assert ((frac.loc[has_correct, "train_boundary_frac_of_correct"]
             - frac.loc[has_correct, "train_boundary_frac"] / correct[has_correct]).abs() < 1e-9).all()
    for run in metrics["variants"]:
        history = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())["history"]
        assert history[-1]["train_boundary_frac"] == pytest.approx(run["final_train_boundary_frac"])

    # Partition by eta: three groups summing to n; x'' = x' at eta = 1, so no eta has more boundary samples.
    part = pd.read_csv(out / "boundary_partition.csv")
    assert sorted(part["eta"]) == sorted(p["partition_etas"])
    assert (part["n"] == p["n_partition"]).all()
    assert (part["n_misclassified"] + part["n_boundary"] + part["n_nonboundary"] == part["n"]).all()
    assert part["n_misclassified"].nunique() == 1  # the clean predictions do not depend on eta
    assert (part["n_boundary"] <= int(part.loc[part["eta"] == 1.0, "n_boundary"].iloc[0])).all()

    claims = [c["claim"] for c in metrics["checks"]]
    assert len(claims) == 4 and all(c["agrees"] in (True, False, None) for c in metrics["checks"])
    _assert_verdicts_need_learned_models(metrics["checks"], [v["clean_acc"] for v in metrics["variants"]], n_eval)
    # Four figures, each shown once as an image (no second copy, no "<Figure size ...>" text).
    assert figure_outputs(out / "boundary_samples.ipynb") == (4, 0)


def _assert_verdicts_need_learned_models(checks, clean_accs, n, num_classes=10):
    """No verdict when no model learned; no "not judged" when every model learned (atkit.experiments.claims)."""
    learned = [model_learned(a, num_classes, n=n).learned for a in clean_accs]
    for check in checks:
        if not any(learned):
            assert check["agrees"] is None and check["verdict"].startswith(NOT_LEARNED), check
        if all(learned):
            assert not check["verdict"].startswith(NOT_LEARNED), check


def test_always_failed_overlap_notebook(tmp_path):
    p = _params("always_failed_overlap")
    out = run_smoke_notebook("always_failed_overlap", tmp_path)
    assert (out / "always_failed_overlap.ipynb").is_file()
    for png in ("overlap", "transfer", "confusion", "toy_case"):
        assert _png_ok(out / f"{png}.png"), png
    metrics = json.loads((out / "metrics.json").read_text())
    n, names = metrics["n_eval"], metrics["methods"]
    m = len(names)
    assert n == p["n_eval"] and names == ["pgd_at", "trades", "mart", "consistency_at"]
    flags = json.loads((out / "per_image_correct.json").read_text())  # the toy case's, for its paired intervals
    toy_rows = [r for r in metrics["toy_case"] if r["model"] in flags]
    assert toy_rows
    for row in toy_rows:
        for metric in ("pgd_acc", "aa_acc"):
            f = flags[row["model"]][metric]
            assert len(f) == n and 100.0 * f.count("1") / n == pytest.approx(row[metric])
    assert ([(c["verdict"], c["measured"]) for c in _results_build().summarise_overlap(out)["checks"]]
            == [(c["verdict"], c["measured"]) for c in metrics["checks"]])
    ds = load_dataset(p["dataset"], **p["data"])
    y = ds.test_y[:n]
    class_counts = [int((y == c).sum()) for c in range(ds.num_classes)]

    # Fig. 2: counts of 0..4 defeated models, per class, add up to the class sizes.
    by_class = pd.read_csv(out / "overlap_by_class.csv")
    assert set(by_class["defeated"]) == set(range(m + 1))
    assert by_class.groupby("class")["count"].sum().tolist() == class_counts
    summary = metrics["overlap"]
    assert sum(summary["count_by_defeated"]) == n
    assert by_class.groupby("defeated")["count"].sum().tolist() == summary["count_by_defeated"]
    for key in ("share_defended_by_all", "share_defended_by_none", "share_all_or_none"):
        assert 0 <= summary[key] <= 1
    assert summary["share_all_or_none"] == pytest.approx(summary["share_defended_by_all"]
                                                         + summary["share_defended_by_none"])
    # Total defeats counted per sample equal the white-box errors summed over the models.
    defeats = sum(k * c for k, c in enumerate(summary["count_by_defeated"]))
    errors = sum(round(n * (100 - metrics["white_box_acc"][name]) / 100) for name in names)
    assert defeats == errors

    # Fig. 3: 4 x 4 matrices for both subsets; subsets split the samples; the diagonal is 100 / 0.
    transfer = pd.read_csv(out / "transfer.csv")
    assert len(transfer) == 2 * m * m
    for name in names:
        own = transfer[(transfer["surrogate"] == name) & (transfer["target"] == name)].set_index("subset")
        assert own.loc["success", "n"] + own.loc["failure", "n"] == n
        assert own.loc["success", "n"] == round(n * (100 - metrics["white_box_acc"][name]) / 100)
        if own.loc["success", "n"]:
            assert own.loc["success", "fooled_pct"] == 100
        if own.loc["failure", "n"]:
            assert own.loc["failure", "fooled_pct"] == 0
    valid = transfer.dropna(subset=["fooled_pct"])
    assert ((valid["fooled_pct"] >= 0) & (valid["fooled_pct"] <= 100)).all()
    assert (valid["fooled"] <= valid["n"]).all()

    # Fig. 8: one C x C matrix per model, rows = class sizes, diagonal = white-box accuracy.
    conf = pd.read_csv(out / "confusion.csv")
    for name in names:
        mat = conf[conf["model"] == name].pivot(index="true", columns="pred", values="count")
        assert mat.shape == (ds.num_classes, ds.num_classes)
        assert mat.sum(axis=1).tolist() == class_counts
        diag = sum(int(mat.loc[c, c]) for c in range(ds.num_classes))
        assert 100 * diag / n == pytest.approx(metrics["white_box_acc"][name])
    assert len(metrics["confusion"]) == m and all(len(v) == ds.num_classes for v in metrics["confusion"].values())
    # The per-image predictions behind the Fig. 8 bootstrap: they rebuild each confusion matrix exactly, and the
    # standard-trained baseline was attacked alike on the same images.
    pred = json.loads((out / "per_image_predictions.json").read_text())
    assert len(pred["labels"]) == n and sorted(pred["white_box_pred"]) == sorted(names)
    for name in names:
        rebuilt = pd.crosstab(pd.Series(pred["labels"]), pd.Series(pred["white_box_pred"][name])).reindex(
            index=range(ds.num_classes), columns=range(ds.num_classes), fill_value=0)
        assert rebuilt.values.tolist() == metrics["confusion"][name]
    assert list(pred["baseline_white_box_pred"]) == ["standard"] == list(metrics["baseline_acc"])
    assert len(pred["baseline_white_box_pred"]["standard"]) == n
    wrong = sum(p != y for p, y in zip(pred["baseline_white_box_pred"]["standard"], pred["labels"]))
    assert metrics["baseline_acc"]["standard"]["white_box_acc"] == pytest.approx(100 * (n - wrong) / n)

    # Fig. 4: the base model and both DUCAT variants under both protocols, accuracies of n samples.
    toy = pd.read_csv(out / "toy_case.csv")
    assert toy["model"].tolist() == ["pgd_at", "hard-label DUCAT [published]", "hard-label DUCAT [adaptive]",
                                     "soft-label DUCAT [published]", "soft-label DUCAT [adaptive]"]
    for col in ("clean_acc", "pgd_acc", "aa_acc"):
        assert _is_accuracy_of(toy[col], n), col
    assert (toy["pgd_minus_aa"] - (toy["pgd_acc"] - toy["aa_acc"])).abs().max() < 1e-9
    # The clean accuracy of a dummy-class model does not depend on the attack protocol.
    for variant in ("hard-label DUCAT", "soft-label DUCAT"):
        assert toy.loc[toy["variant"] == variant, "clean_acc"].nunique() == 1
    hard_cfg = json.loads((Path(metrics["toy_runs"]["hard-label DUCAT"]) / "metrics.json").read_text())
    assert hard_cfg["status"] == "finished"
    assert yaml.safe_load((Path(metrics["toy_runs"]["hard-label DUCAT"]) / "config.yaml").read_text())[
        "method_params"]["hard_labels"] is True
    assert len(metrics["checks"]) == 3 + len(p.get("toy_protocols", ["published", "adaptive"]))
    _assert_verdicts_need_learned_models(metrics["checks"], list(metrics["clean_acc"].values())
                                         + [r["clean_acc"] for r in metrics["toy_case"]], n)
    assert figure_outputs(out / "always_failed_overlap.ipynb") == (4, 0)


# ============================================================================================
# The pieces the notebooks rest on: the boundary_budget method and the analysis helpers.
# ============================================================================================
def _ce_rows(z, y):
    """Cross-entropy per row, written out: -(z_y - log sum_k exp z_k)."""
    return -(z[torch.arange(len(y)), y] - torch.log(torch.exp(z.double()).sum(dim=1)))


@pytest.fixture
def far_setup():
    """A linear model and a far-away fixed x' so that boundary, non-boundary and misclassified samples all occur."""
    torch.manual_seed(5)
    model = TinyNet().eval()  # eval: every forward is independent of the batch it is in
    batch = tiny_batch(b=48, seed=3)
    x_adv = (batch.x + 0.8 * torch.randn_like(batch.x)).clamp(0, 1)
    with torch.no_grad():
        z, z_adv = model(batch.x), model(x_adv)
    return model, batch, x_adv, z.argmax(1) == batch.y, z_adv.argmax(1) != batch.y


def _with_attack(method, attack):
    method.attack = attack
    return method


@pytest.mark.parametrize("b_scale,n_scale,m_scale", [(0.0, 1.0, 1.0), (0.25, 0.5, 1.0), (1.0, 0.0, 0.5)])
def test_boundary_budget_loss_by_hand(far_setup, b_scale, n_scale, m_scale):
    model, batch, x_adv, ok, adv_wrong = far_setup
    x, y, eta = batch.x, batch.y, 0.9
    with torch.no_grad():
        red_wrong = model(x + eta * (x_adv - x)).argmax(1) != y
    boundary = ok & adv_wrong & red_wrong
    nonboundary = ok & ~boundary
    assert boundary.any() and nonboundary.any() and (~ok).any()
    scale = torch.where(boundary, b_scale, torch.where(nonboundary, n_scale, m_scale)).view(-1, 1, 1, 1)
    with torch.no_grad():
        expected = _ce_rows(model(x + scale * (x_adv - x)), y).mean()

    method = _with_attack(get_method("boundary_budget", boundary_scale=b_scale, nonboundary_scale=n_scale,
                                     misclassified_scale=m_scale, eta=eta), lambda *a, **k: x_adv)
    out = method.loss(model, batch, StepContext())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(out.extras["boundary"], boundary) and torch.equal(out.extras["clean_correct"], ok)
    # The epoch log counts the same partition, over every batch of the epoch.
    method.loss(model, batch, StepContext())
    log = method.epoch_metrics(None)
    n = len(y)
    assert log["train_boundary_frac"] == pytest.approx(int(boundary.sum()) / n)
    assert log["train_nonboundary_frac"] == pytest.approx(int(nonboundary.sum()) / n)
    assert log["train_misclassified_frac"] == pytest.approx(int((~ok).sum()) / n)
    assert log["train_boundary_frac_of_correct"] == pytest.approx(int(boundary.sum()) / int(ok.sum()))
    method.on_epoch_start(1)
    assert method.epoch_metrics(None) == {}


def test_boundary_budget_special_cases_match_pgd_at_and_raat_bound(far_setup):
    model, batch, x_adv, _, _ = far_setup
    fixed = lambda *a, **k: x_adv  # noqa: E731
    full = _with_attack(get_method("boundary_budget"), fixed).loss(model, batch, StepContext())
    pgd_at = _with_attack(get_method("pgd_at"), fixed).loss(model, batch, StepContext())
    assert full.loss.item() == pytest.approx(pgd_at.loss.item(), rel=1e-6)
    # boundary samples at scale eta, the others at eps: RAAT's BOUND treatment without DICAR.
    bound = _with_attack(get_method("boundary_budget", boundary_scale=0.9, eta=0.9), fixed).loss(
        model, batch, StepContext())
    raat = _with_attack(get_method("raat", eta=0.9, dicar=False), fixed).loss(model, batch, StepContext())
    assert bound.loss.item() == pytest.approx(raat.loss.item(), rel=1e-6)
    assert bound.loss.item() != pytest.approx(full.loss.item(), rel=1e-4)


def test_boundary_budget_ball_mode_attacks_the_scaled_ball(far_setup):
    model, batch, x_adv, ok, adv_wrong = far_setup
    x, y, full_eps = batch.x, batch.y, 8 / 255
    calls = []

    def fake_attack(m, xs, ys, **kw):
        # A deterministic stand-in for PGD that moves each image r = eps / full eps of the way to its x'.
        r = kw.get("eps", full_eps) / full_eps
        rows = torch.cat([(x == xi).flatten(1).all(1).nonzero().flatten()[:1] for xi in xs])
        calls.append((len(ys), round(r, 6)))
        return xs + r * (x_adv[rows] - xs)

    method = _with_attack(get_method("boundary_budget", boundary_scale=0.5, nonboundary_scale=0.25, eta=0.9,
                                     eta_mode="ball", budget_mode="ball"), fake_attack)
    out = method.loss(model, batch, StepContext())
    with torch.no_grad():
        boundary = ok & adv_wrong & (model(x + 0.9 * (x_adv - x)).argmax(1) != y)
    nonboundary = ok & ~boundary
    assert boundary.any() and nonboundary.any()
    # Full attack, the eta ball for the partition, then each scaled budget on its own group only.
    assert sorted(calls, key=lambda c: c[1]) == [(int(nonboundary.sum()), 0.25), (int(boundary.sum()), 0.5),
                                                 (len(y), 0.9), (len(y), 1.0)]
    scale = torch.where(boundary, 0.5, torch.where(nonboundary, 0.25, 1.0)).view(-1, 1, 1, 1)
    with torch.no_grad():
        expected = _ce_rows(model(x + scale * (x_adv - x)), y).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_confusion_matrix_counts():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(pred, y, 3), expected)


def test_cross_attack_summaries_by_hand():
    # 2 classes, 3 models, 5 samples; adv_pred[s, t, i] = label of target t on the example made on surrogate s.
    y = torch.tensor([0, 1, 0, 1, 0])
    adv = torch.tensor([
        [[0, 1, 1, 1, 1], [0, 1, 1, 0, 1], [0, 0, 1, 1, 0]],
        [[0, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 1, 0]],
        [[0, 1, 1, 0, 0], [1, 0, 1, 0, 1], [0, 1, 1, 0, 1]],
    ])
    cross = CrossAttack(["a", "b", "c"], y, torch.zeros(3, 5, dtype=torch.long), adv, 2)
    white = torch.stack([adv[0, 0], adv[1, 1], adv[2, 2]]) == y
    assert torch.equal(cross.white_box_correct(), white)
    defeats = (~white).sum(0)
    assert cross.defeat_counts().tolist() == defeats.tolist()
    s = cross.overlap_summary()
    assert s["count_by_defeated"] == [int((defeats == k).sum()) for k in range(4)]
    assert s["share_all_or_none"] == pytest.approx((int((defeats == 0).sum()) + int((defeats == 3).sum())) / 5)
    by_class = cross.overlap_by_class(["cat", "dog"])
    assert by_class["count"].sum() == 5 and set(by_class["class_name"]) == {"cat", "dog"}
    table = cross.transfer_table().set_index(["surrogate", "target", "subset"])
    for si, sname in enumerate("abc"):
        success = adv[si, si] != y
        for ti, tname in enumerate("abc"):
            for subset, mask in (("success", success), ("failure", ~success)):
                row = table.loc[(sname, tname, subset)]
                fooled = int((adv[si, ti][mask] != y[mask]).sum())
                assert row["n"] == int(mask.sum()) and row["fooled"] == fooled
    assert torch.equal(cross.confusion(1), confusion_matrix(adv[1, 1], y, 2))
    assert cross.white_box_predictions() == {"a": adv[0, 0].tolist(), "b": adv[1, 1].tolist(), "c": adv[2, 2].tolist()}
    acc = cross.accuracies()
    assert acc["b"]["white_box_acc"] == pytest.approx(100 * int((adv[1, 1] == y).sum()) / 5)
    assert acc["a"]["clean_acc"] == pytest.approx(100 * int((torch.zeros(5, dtype=torch.long) == y).sum()) / 5)


def test_boundary_partition_matches_a_hand_partition():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x, y = torch.rand(40, 3, 4, 4), torch.randint(0, 5, (40,))
    eps, step = 0.3, 0.1
    part = boundary_partition(model, x, y, etas=[0.2, 1.0], eps=eps, step_size=step, steps=3, num_classes=5,
                              batch_size=16, seed=7)
    torch.manual_seed(7)
    x_adv = torch.cat([pgd(model, x[i:i + 16], y[i:i + 16], eps=eps, step_size=step, steps=3)
                       for i in range(0, 40, 16)])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        adv_wrong = model(x_adv).argmax(1) != y
        for eta in (0.2, 1.0):
            red_wrong = model(x + eta * (x_adv - x)).argmax(1) != y
            row = part[part["eta"] == eta].iloc[0]
            assert row["n_boundary"] == int((ok & adv_wrong & red_wrong).sum())
            assert row["n_misclassified"] == int((~ok).sum())
            assert row["n_boundary"] + row["n_nonboundary"] == int(ok.sum())
    assert 0 < part["n_boundary"].max()

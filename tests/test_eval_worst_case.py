"""Numbers that cannot overstate robustness (atkit.evaluation, atkit.evaluation.sanity, run_autoattack): the worst case
over the dummy-class protocols is the headline, adaptive AutoAttack breaks by the score's prediction, Mean/NRR
use the worst case over every robust attack, sanity checks compare the strongest attack and refuse flat
profiles, AutoAttack's warnings are kept, eps = 0 costs nothing.

The models are built by hand on 1x2x2 images: every logit is linear in the first pixel,
``z_k = bias_k + slope_k * t`` with ``t = (pixel - 0.5) / eps`` in [-1, 1] inside the ball, so where each
attack ends up can be read off the biases and slopes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from atkit.training.config import RunConfig
from atkit.evaluation import PROTOCOL_LABELS, WORST_CASE, EvalResult, EvalSetup, evaluate, worst_case_over_protocols
from atkit.evaluation.autoattack import run_autoattack
from atkit.evaluation.target import ScoredView
from atkit.models.base import AtkitModel
from atkit.models.dummy import MergedDummyModel
from atkit.evaluation.sanity import check_black_box, run_sanity_checks
from helpers import TinyConvNet, fit_blobs, make_blobs

EPS = 8 / 255
LOW = -10.0
pytestmark = pytest.mark.usefixtures("one_thread")


class PixelModel(AtkitModel):
    """Logits ``bias + slope * (x[0] - 0.5) / eps`` of the first pixel of a 1x2x2 image."""

    def __init__(self, num_classes: int, bias: list[float], slope: list[float], dummy: bool = False) -> None:
        super().__init__(num_classes, dummy_classes=dummy, in_channels=1)
        self.fc = nn.Linear(4, len(bias))
        self.penultimate_dim = self.third_to_last_dim = 4
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, 0] = torch.tensor(slope) / EPS
            self.fc.bias.copy_(torch.tensor(bias) - 0.5 * torch.tensor(slope) / EPS)

    def _trunk(self, x: Tensor, need_third: bool):
        flat = x.flatten(1)
        return flat, flat


def inflated_dummy() -> PixelModel:
    """4 classes + 4 dummies, true class 0 (z_0 = 1). The dummy of 0 rises with t (0.5 + 1.25 t), class 1
    falls (0.9 - 0.5 t). A raw-logit attack climbs into the dummy of 0, which the projected prediction
    counts as correct: the published protocol over-reports. On the merged logits the attack goes down to
    t = -1, where class 1 (1.4) beats class 0 (1.0): really broken."""
    return PixelModel(4, [1.0, 0.9, LOW, LOW, 0.5, LOW, LOW, LOW], [0, -0.5, 0, 0, 1.25, 0, 0, 0], dummy=True)


def fake_break_dummy() -> PixelModel:
    """4 classes + 4 dummies, true class 0 (z_0 = 1). Class 1 and its dummy rise together (0.1 + 0.85 t):
    at t = 1 their logsumexp (0.95 + log 2) beats class 0 although neither logit does, so the merged
    argmax leaves 0 while the projected prediction stays 0 -- a fake break, where APGD-CE on the merged
    logits ends. Class 2 (0.9 - 0.2 t) beats class 0 at t = -1: the real break APGD-T (target class 2, the
    runner-up) finds, if AutoAttack hands it the point."""
    return PixelModel(4, [1.0, 0.1, 0.9, LOW, LOW, 0.1, LOW, LOW], [0, 0.85, -0.2, 0, 0, 0.85, 0, 0], dummy=True)


def ce_weak() -> PixelModel:
    """10 classes, true class 0 (z_0 = 1), gradients everywhere informative. Eight classes rise together
    (0.5 + 0.19 t, never above 0.69): cross-entropy grows fastest that way, so CE-PGD ends at t = 1 and
    breaks nothing. Class 1 (0.9 - 0.2 t), the runner-up everywhere in the ball, beats class 0 at t = -1,
    where a margin loss (CW, Square) goes."""
    return PixelModel(10, [1.0, 0.9] + [0.5] * 8, [0.0, -0.2] + [0.19] * 8)


def pgd_blind_dummy() -> PixelModel:
    """``ce_weak`` with 10 dummies, the dummy of 0 rising (0.95 + 0.5 t): CE-PGD breaks nothing under any
    protocol (no PGD-20 gap), but a raw-logit CW is caught by the dummy of 0 on about half of the points
    while CW on the merged logits breaks most of them -- an inflation only a margin attack shows."""
    bias = [1.0, 0.9] + [0.6] * 8 + [0.95] + [LOW] * 9
    slope = [0.0, -0.2] + [0.35] * 8 + [0.5] + [0.0] * 9
    return PixelModel(10, bias, slope, dummy=True)


def points(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    x = 0.5 + 0.002 * (2 * torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed)) - 1)
    return x, torch.zeros(n, dtype=torch.long)


class _NoGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class Flat(nn.Module):
    """A normal net behind an identity whose gradient is zero: attacks cannot move, accuracy stays flat."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.num_classes = net, net.num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_NoGradient.apply(x))


@pytest.fixture(scope="module")
def blobs():
    torch.manual_seed(0)
    net = fit_blobs(TinyConvNet())
    x, y = make_blobs(128, seed=1)
    return net, x, y


# ------------------------------------------------------------------------ 1. dummy-class headline
def test_worst_case_over_protocols_is_the_headline_of_an_inflated_dummy_model():
    x, y = points(16)
    head = evaluate(inflated_dummy(), x, y, attacks=("clean", "aa"))
    out = {head.protocol: head, **head.protocols}
    assert list(out) == [WORST_CASE, "published", "adaptive", "adaptive_max"]
    worst, published = out[WORST_CASE], out["published"]
    # The raw-logit attacks climb into the dummy of 0, which the projected prediction counts as correct; AutoAttack's
    # own bookkeeping on the raw logits would stop there and report about half the points robust. Success decided
    # by the scored prediction keeps attacking them, so even the published protocol finds the real break.
    assert published.details["aa"]["raw_argmax_accuracy"] == 0.0 and published.accuracy["aa"] == 0.0
    assert out["adaptive"].accuracy["aa"] == 0.0
    expected = published.per_sample["aa"] & out["adaptive"].per_sample["aa"] & out["adaptive_max"].per_sample["aa"]
    assert torch.equal(worst.per_sample["aa"], expected) and worst.accuracy["aa"] == 0.0
    assert worst.protocol == WORST_CASE and worst.details["aa"]["accuracy_by_protocol"]["published"] == \
        published.accuracy["aa"]
    assert worst.mean == 50.0 and worst.nrr == 0.0 and published.mean >= worst.mean
    record = head.to_dict()
    assert record["protocol"] == WORST_CASE and record["accuracy"]["aa"] == 0.0
    assert set(record["protocols"]) == {"published", "adaptive", "adaptive_max"}
    assert "papers' protocol" in record["protocol_labels"]["published"]
    assert EvalResult.from_dict(record).accuracy == worst.accuracy


def test_worst_case_refuses_results_on_other_images():
    x, y = points(8)
    a = evaluate(inflated_dummy(), x, y, attacks=("clean",), protocol="published")
    b = evaluate(inflated_dummy(), x[:4], y[:4], attacks=("clean",), protocol="adaptive")
    with pytest.raises(Exception, match="other images"):
        worst_case_over_protocols({"published": a, "adaptive": b})


def test_trainer_eval_json_cli_and_tables_lead_with_the_worst_case(tmp_path, capsys):
    from atkit.workbench.cli import main
    from atkit.workbench.results import aggregate_seeds, collect_runs, paper_table
    from atkit.training.trainer import train

    cfg = RunConfig.from_dict(dict(
        method="pgd_at+ducat", method_params={"start_epoch": 0, "reference_epochs": 1}, dataset="synthetic",
        data={"n_train": 64, "n_test": 16, "image_size": 8, "num_classes": 4}, model="small_cnn", batch_size=32,
        schedule="constant", epochs=1, max_steps_per_epoch=2, out_dir=str(tmp_path / "runs"),
        threat={"steps": 2}, eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean", "pgd2", "cw"],
                                   "sanity": False}))
    run_dir = train(cfg, progress=False).run_dir
    ev = json.loads((run_dir / "eval.json").read_text())["final"]
    assert ev["protocol"] == WORST_CASE and set(ev["protocols"]) == {"published", "adaptive", "adaptive_max"}
    assert ev["protocol_labels"]["published"] == PROTOCOL_LABELS["published"]
    for name in ("pgd2", "cw"):
        flags = [ev["protocols"][p]["per_sample"][name] for p in ev["protocols"]]
        assert ev["per_sample"][name] == "".join("1" if all(f[i] == "1" for f in flags) else "0"
                                                 for i in range(16))
    assert ev["robust_metric"] == "worst of pgd2, cw"

    out = tmp_path / "cli.json"
    assert main(["eval", str(run_dir), "--attacks", "clean,pgd2", "--n", "16", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(printed)[:2] == [WORST_CASE, "published"] and "papers' protocol" in printed["published"]["protocol"]
    written = json.loads(out.read_text())
    assert written["protocol"] == WORST_CASE and written["accuracy"] == printed[WORST_CASE]["accuracy"]
    assert printed[WORST_CASE]["robust_metric"] == "pgd2"

    from atkit.workbench.ablation import AblationSession

    # The ablation table's row of this run shows the worst case, not the published protocol (made to differ here).
    full = json.loads((run_dir / "eval.json").read_text())
    full["final"]["protocols"]["published"]["accuracy"]["pgd2"] = 99.0
    (run_dir / "eval.json").write_text(json.dumps(full))
    ablation_row = AblationSession(cfg.to_dict(), runs_dir=tmp_path / "runs")._row(run_dir, {}, reused=True)
    assert ablation_row["final_pgd2"] == ev["accuracy"]["pgd2"] != 99.0 and ablation_row[f"final_mean[{ev['robust_metric']}]"] == ev["mean"]

    agg = aggregate_seeds(collect_runs(tmp_path / "runs"))
    assert WORST_CASE in set(agg["protocol"])
    row = paper_table(agg, robust=("pgd2",)).iloc[0]
    assert row["protocol"] == WORST_CASE
    assert "PGD-2 final (published: papers' protocol)" in row.index  # the heading comes from the attack's file


def test_results_tables_compute_the_worst_case_of_an_older_eval_json(tmp_path):
    from atkit.workbench.results import eval_frame

    x, y = points(16)
    out = evaluate(inflated_dummy(), x, y, attacks=("clean", "pgd20")).protocols
    old = {"final": {**out["published"].to_dict(), "protocols": {p: r.to_dict() for p, r in out.items()}}}
    frame = eval_frame(old)
    assert list(frame["protocol"]) == [WORST_CASE, "published", "adaptive", "adaptive_max"]
    worst = frame.iloc[0]
    assert worst["pgd20"] == min(frame["pgd20"]) == 0.0 and frame.iloc[1]["pgd20"] > 0.0


def test_sanity_checks_on_a_merged_view_leave_batchnorm_statistics_alone():
    """An attack on the merged view used to leave the wrapped model in train mode, so the next forward
    updated its BatchNorm statistics and every later number (e.g. the next protocol's clean accuracy) moved."""
    from atkit.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", 4, dummy_classes=True).eval()
    x, y = make_blobs(16, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for protocol in ("adaptive", "adaptive_max"):
        run_sanity_checks(model, x, y, checks=("large_eps", "black_box"), protocol=protocol, large_eps_steps=2,
                          square_n=8, square_queries=5)
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------- 2. adaptive AutoAttack criterion
def test_adaptive_autoattack_breaks_by_the_projected_prediction():
    model = fake_break_dummy()
    x, y = points(16)
    merged = MergedDummyModel(model, how="logsumexp")
    with torch.no_grad():  # the fake break: merged argmax leaves 0 at t = 1, the projected prediction does not
        corner = x.clone()
        corner[:, 0, 0, 0] = 0.5 + EPS
        assert (merged(corner).argmax(1) != 0).all() and (model(corner).argmax(1) % 4 == 0).all()
    res = evaluate(model, x, y, attacks=("clean", "aa"), protocol="adaptive")
    per_attack = res.details["aa"]["per_attack"]
    # APGD-CE cannot retire a point at the fake break (its bookkeeping follows the projected prediction), so every
    # point it counts as broken is broken for real, and APGD-T gets every other point and breaks it.
    assert per_attack["apgd-ce"] > 0.0 and per_attack["apgd-t"] == 0.0
    assert res.accuracy["aa"] == 0.0 and res.details["aa"]["ran_now"][:2] == ["apgd-ce", "apgd-t"]
    # The same with run_autoattack directly on the scored view: its argmax is the projected prediction.
    direct = run_autoattack(ScoredView(model, 4, "adaptive"), x, y, eps=EPS, version="custom",
                            attacks=["apgd-ce", "apgd-t"], n_iter=10, n_restarts=1)
    assert direct.per_attack["apgd-ce"] > 0.0 and direct.accuracy == 0.0


def test_plain_model_autoattack_equals_the_official_driver(blobs):
    """Without a score model the success criterion is the official one: the images equal
    ``pyautoattack.AutoAttack.run_standard_evaluation``'s, one by one."""
    from pyautoattack import AutoAttack

    net, x, y = blobs
    x, y = x[:24], y[:24]
    ours = run_autoattack(net, x, y, eps=EPS, version="custom", attacks=["apgd-ce", "apgd-dlr"], batch_size=8,
                          n_iter=10, n_restarts=1, seed=0)
    official = AutoAttack(net, norm="Linf", eps=EPS, version="custom", attacks=["apgd-ce", "apgd-dlr"], seed=0)
    official.verbose = False
    for attack in (official.apgd, official.apgd_targeted):  # the budgets APGDAttack(n_iter=10, n_restarts=1) sets
        attack.n_iter = attack.n_iter_orig = 10
        attack.n_restarts, attack.n_iter_2, attack.n_iter_min, attack.size_decr = 1, 2, 1, 1
    with torch.no_grad():
        x_official = official.run_standard_evaluation(x, y, batch_size=8)[0]
    assert torch.equal(ours.x_adv, x_official)


# ------------------------------------------------------------- 3. Mean/NRR from the worst case
def test_mean_and_nrr_use_cw_when_it_beats_pgd():
    x, y = points(16)
    res = evaluate(ce_weak(), x, y, attacks=("clean", "pgd20", "cw"))
    assert res.accuracy["pgd20"] == 100.0 and res.accuracy["cw"] == 0.0  # CW beats CE-PGD here
    assert res.robust_metric == "worst of pgd20, cw" and res.robust_accuracy == 0.0
    assert res.mean == 50.0 and res.nrr == 0.0
    data = res.to_dict()
    assert data["robust_metric"] == "worst of pgd20, cw" and data["robust_attacks"] == ["pgd20", "cw"]
    assert EvalResult.from_dict(data).robust_accuracy == 0.0


# ---------------------------------------------------------------------------- 4. sanity checks
def test_dummy_protocol_compares_the_strongest_attack():
    x, y = points(64)
    model = pgd_blind_dummy()
    pgd = run_sanity_checks(model, x, y, checks=("dummy_protocol",), dummy_attack="pgd20")[0]
    assert pgd["passed"] and pgd["values"]["gap"] == 0.0  # PGD-20 sees no inflation at all
    by_protocol = evaluate(model, x, y, attacks=("clean", "pgd20", "cw")).protocols
    check = run_sanity_checks(model, x, y, checks=("dummy_protocol",), reference=by_protocol["published"].per_sample,
                              protocol_results=by_protocol)[0]
    assert check["values"]["attack"] == "cw" and not check["passed"] and "overstates" in check["detail"]
    assert check["values"]["published"] == by_protocol["published"].accuracy["cw"]
    assert check["values"]["gap"] > 20.0
    # Through evaluate(sanity=...): one run of the checks, attached to the headline.
    head = evaluate(model, x, y, attacks=("clean", "pgd20", "cw"), sanity={"checks": ("dummy_protocol",)})
    out = {head.protocol: head, **head.protocols}
    assert out[WORST_CASE].checks[0]["values"]["attack"] == "cw" and out["adaptive"].checks is None
    assert any(w.startswith("dummy_protocol:") for w in out[WORST_CASE].warnings)


def test_flat_accuracy_fails_the_monotonicity_checks(blobs):
    net, x, y = blobs
    checks = {c["name"]: c for c in run_sanity_checks(Flat(net), x, y, checks=("monotone_steps", "monotone_eps"),
                                                      n=128)}
    steps, eps = checks["monotone_steps"], checks["monotone_eps"]
    assert not steps["passed"] and "does not drop" in steps["detail"]
    assert not eps["passed"] and "barely drops" in eps["detail"]
    assert eps["values"]["drop"] < eps["values"]["required_drop"]
    normal = {c["name"]: c for c in run_sanity_checks(net, x, y, checks=("monotone_steps", "monotone_eps"), n=128)}
    assert normal["monotone_steps"]["passed"] and normal["monotone_eps"]["passed"]
    assert normal["monotone_eps"]["values"]["drop"] >= normal["monotone_eps"]["values"]["required_drop"]


def test_black_box_with_a_margin_attack_does_not_call_a_ce_weak_model_masked():
    x, y = points(32)
    model = ce_weak()
    pgd = evaluate(model, x, y, attacks=("pgd20",)).per_sample
    check = check_black_box(model, x, y, EvalSetup.resolve(), white_box=pgd, n_queries=100)
    assert check["values"]["square_accuracy"] < check["values"]["ce_accuracy"]  # Square beats CE-PGD ...
    assert check["passed"] and check["values"]["margin_attacks"] == ["cw"]  # ... not the CW margin attack
    assert check["values"]["ce_attacks_weak"] and check["detail"].startswith("CE attacks are weak here")
    assert "masked" not in check["detail"]


def test_autoattack_warnings_are_recorded_without_sanity(blobs, tmp_path):
    net, x, y = blobs
    res = evaluate(Flat(net), x[:16], y[:16], attacks=("clean", "apgd"), batch_size=16)
    assert res.checks is None
    assert any(w.startswith("apgd: apgd-dlr:") and "zero gradient" in w for w in res.warnings)
    assert res.details["apgd"]["autoattack_warnings"] and res.warnings == res.attack_warnings
    res.to_json(tmp_path / "eval.json")
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["warnings"] == res.warnings and data["attack_warnings"] == res.attack_warnings
    assert EvalResult.from_json(tmp_path / "eval.json").warnings == res.warnings
    assert evaluate(net, x[:16], y[:16], attacks=("clean", "apgd"), batch_size=16).warnings == []


# ----------------------------------------------------------------------------------- 5. eps = 0
def test_eps_zero_returns_clean_without_running_autoattack(blobs, tmp_path):
    net, x, y = blobs
    calls = []
    handle = net.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[0]))
    try:
        res = evaluate(net, x[:32], y[:32], attacks=("clean", "aa"), threat={"eps": 0.0, "step_size": 0.0},
                       batch_size=32, aa_state_dir=tmp_path)
    finally:
        handle.remove()
    assert res.accuracy["aa"] == res.accuracy["clean"]
    assert torch.equal(res.per_sample["aa"], res.per_sample["clean"])
    assert res.details["aa"]["ran_now"] == [] and "eps = 0" in res.details["aa"]["skipped"]
    assert set(res.details["aa"]["per_attack"].values()) == {res.accuracy["clean"]}
    assert len(calls) <= 6 and not list(tmp_path.iterdir())  # a few scoring forwards, no state file

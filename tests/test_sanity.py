"""Evaluation sanity checks (atkit.evaluation.sanity): a model that masks its gradients on purpose is flagged,
a normally trained model passes, and the checks reach EvalResult, its JSON, its table and eval.json."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from atkit.training.config import RunConfig
from atkit.evaluation import EvalResult, evaluate, results_table
from atkit.models.base import AtkitModel
from atkit.evaluation.sanity import CHECK_NAMES, checks_summary, run_sanity_checks
from atkit.evaluation.sanity.checks import _monotone
from atkit.training.trainer import train
from atkit.core.utils import ConfigError
from helpers import fit_blobs, make_blobs

NUM_CLASSES = 4
# Small and cheap: 128 samples for the gradient checks, Square on 64 of them.
FAST = dict(n=128, square_n=64, square_queries=300)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class Quantized(nn.Module):
    """Non-differentiable input quantisation x -> round(8x)/8 in front of a normal net: the input
    gradient is exactly zero (torch.round), the classic obfuscated-gradient defense."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.num_classes = net, NUM_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 8) / 8)


class Saturated(nn.Module):
    """Log-softmax of logits scaled by 1e4: the CE gradient underflows to zero in float32 on every
    confidently classified point, though the decision is the normal net's."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.num_classes = net, NUM_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(1e4 * self.net(x), dim=1)


class Noisy(nn.Module):
    """Gaussian input noise at test time: a randomized model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.num_classes = net, NUM_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = TinyNet()
    fit_blobs(net)
    x_test, y_test = make_blobs(128, seed=1)
    return net.eval(), x_test, y_test


def by_name(checks):
    return {c["name"]: c for c in checks}


@pytest.fixture(scope="module")
def normal_checks(trained):
    net, x, y = trained
    return by_name(run_sanity_checks(net, x, y, **FAST))


def test_normal_model_passes_every_check(trained, normal_checks):
    net, x, y = trained
    assert set(normal_checks) == set(CHECK_NAMES) - {"dummy_protocol"}  # no dummy classes here
    for name, check in normal_checks.items():
        assert check["passed"], (name, check["detail"])
        assert isinstance(check["detail"], str) and check["detail"]
    with torch.no_grad():
        clean = 100.0 * (net(x).argmax(1) == y).float().mean().item()
    assert clean > 90  # a real model, so the robust numbers below mean something
    steps = normal_checks["monotone_steps"]["values"]["accuracy"]
    assert list(steps) == ["fgsm", "pgd10", "pgd20", "pgd50"] and steps["pgd50"] < clean
    assert normal_checks["large_eps"]["values"]["accuracy"] <= 5.0
    assert normal_checks["zero_gradients"]["values"]["n_zero"] == 0
    json.dumps(list(normal_checks.values()))  # JSON-ready


def test_quantized_input_is_flagged(trained):
    net, x, y = trained
    checks = by_name(run_sanity_checks(Quantized(net), x, y, **FAST))
    zero = checks["zero_gradients"]
    assert not zero["passed"] and zero["values"]["fraction"] == 1.0
    assert zero["values"]["autoattack"]  # the official AutoAttack check raised its flag too
    assert not checks["large_eps"]["passed"] and checks["large_eps"]["values"]["accuracy"] > 50
    black = checks["black_box"]
    assert not black["passed"]
    assert black["values"]["square_accuracy"] < black["values"]["white_box_accuracy"]
    assert black["values"]["broken_only_by_square"] > 2
    summary = checks_summary(list(checks.values()))
    assert summary.startswith("WARN:") and "zero-gradients" in summary and "black-box<white-box" in summary


def test_saturated_softmax_is_flagged(trained):
    net, x, y = trained
    checks = by_name(run_sanity_checks(Saturated(net), x, y, **FAST))
    assert not checks["zero_gradients"]["passed"] and checks["zero_gradients"]["values"]["fraction"] > 0.5
    assert not checks["large_eps"]["passed"]
    # Only the CE gradient underflows: the CW margin in the black-box reference still breaks the points,
    # so Square does not beat the white-box attacks; it beats the CE ones, which the check says.
    black = checks["black_box"]
    assert black["passed"] and black["values"]["ce_attacks_weak"] and "CE attacks are weak here" in black["detail"]
    assert black["values"]["margin_attacks"] == ["cw"]
    assert black["values"]["square_accuracy"] < black["values"]["ce_accuracy"]
    assert checks["randomness"]["passed"]  # deterministic: only the gradient checks fire


def test_randomized_model_is_flagged_and_state_restored(trained):
    net, x, y = trained
    noisy = Noisy(net).train()
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    checks = by_name(run_sanity_checks(noisy, x, y, checks=("randomness", "zero_gradients"), n=64))
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert noisy.training and all(p.requires_grad for p in noisy.parameters())
    assert not checks["randomness"]["passed"] and checks["randomness"]["values"]["max_abs_diff"] > 0
    assert checks["zero_gradients"]["passed"]
    assert by_name(run_sanity_checks(net, x, y, checks=("randomness",), n=64))["randomness"]["passed"]


def test_monotone_rule_and_tolerance():
    names = ["a", "b", "c", "d"]
    assert _monotone(names, [50.0, 40.0, 41.0, 30.0], tol_pct=2.0) == []  # within tolerance
    bad = _monotone(names, [50.0, 40.0, 45.0, 30.0], tol_pct=2.0)
    assert bad == ["c 45.0% > b 40.0%"]
    # Compared with the lowest so far, not only the neighbour.
    assert _monotone(names, [50.0, 40.0, 41.5, 43.0], tol_pct=2.0) == ["d 43.0% > b 40.0%"]


class TwoClassDummy(AtkitModel):
    """2 real classes + 2 dummies on 1x2x2 images (pixels a, b): ``z_0 = 1``, ``z_1 = 0.5 + 20 (b - 0.5)``,
    ``z_2 = 0.5 + 40 (a - 0.5) * dummy_gain`` (dummy of class 0), ``z_3 = -10``.

    With ``dummy_gain = 1`` the attack on the raw logits raises the dummy of the true class, which the
    projected prediction still counts as correct: the published protocol reports full robustness while
    the adaptive attack breaks every point. With ``dummy_gain = 0`` the dummy is inert and both agree.
    """

    def __init__(self, dummy_gain: float) -> None:
        super().__init__(2, dummy_classes=True, in_channels=1)
        self.fc = nn.Linear(4, 4)
        self.penultimate_dim = self.third_to_last_dim = 4
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([1.0, 0.5 - 10.0, 0.5 - 20.0 * dummy_gain, -10.0]))
            self.fc.weight[1, 1] = 20.0
            self.fc.weight[2, 0] = 40.0 * dummy_gain

    def _trunk(self, x: torch.Tensor, need_third: bool):
        flat = x.flatten(1)
        return flat, flat


def test_dummy_protocol_gap_is_flagged():
    x = 0.5 + 0.002 * (2 * torch.rand(32, 1, 2, 2, generator=torch.Generator().manual_seed(0)) - 1)
    y = torch.zeros(32, dtype=torch.long)
    over = by_name(run_sanity_checks(TwoClassDummy(1.0), x, y, checks=("dummy_protocol",),
                                     dummy_attack="pgd20"))["dummy_protocol"]
    assert not over["passed"] and "overstates" in over["detail"]
    assert over["values"]["published"] == 100.0 and over["values"]["adaptive"] == 0.0
    fair = by_name(run_sanity_checks(TwoClassDummy(0.0), x, y, checks=("dummy_protocol",),
                                     dummy_attack="pgd20"))["dummy_protocol"]
    assert fair["passed"] and fair["values"]["gap"] == 0.0
    # Without an AA / APGD / CW result to compare, the check runs CW (a margin attack) itself.
    default = by_name(run_sanity_checks(TwoClassDummy(1.0), x, y, checks=("dummy_protocol",)))["dummy_protocol"]
    assert default["values"]["attack"] == "cw" and not default["passed"]


def test_unknown_check_name_is_refused(trained):
    net, x, y = trained
    with pytest.raises(ConfigError, match="Did you mean 'zero_gradients'"):
        run_sanity_checks(net, x, y, checks=("zero_gradient",))
    with pytest.raises(ConfigError, match="square_n"):
        run_sanity_checks(net, x, y, square_n=0)


def test_checks_in_eval_result_json_and_tables(trained, tmp_path):
    net, x, y = trained
    opts = dict(n=64, square_n=32, steps_attacks=("fgsm", "pgd10", "pgd20"))
    masked = evaluate(Quantized(net), x, y, attacks=("clean", "pgd10"), sanity=opts)
    plain = evaluate(net, x, y, attacks=("clean", "pgd10"))
    assert plain.checks is None and plain.summary_row()["checks"] == "not run"
    assert masked.warnings and any(w.startswith("zero_gradients:") for w in masked.warnings)
    # The main evaluation's PGD-10 joins the white-box reference of the black-box check.
    black = by_name(masked.checks)["black_box"]
    assert "pgd10" in black["values"]["white_box_attacks"]

    path = tmp_path / "eval.json"
    masked.to_json(path)
    data = json.loads(path.read_text())
    assert data["warnings"] == masked.warnings and [c["name"] for c in data["checks"]] == [c["name"] for c in
                                                                                             masked.checks]
    back = EvalResult.from_json(path)
    assert back.checks == masked.checks and back.warnings == masked.warnings

    row = masked.summary_row("masked")
    assert row["model"] == "masked" and row["clean"] == masked.accuracy["clean"]
    assert row["checks"].startswith("WARN:") and "zero-gradients" in row["checks"]
    clean_run = evaluate(net, x, y, attacks=("clean", "pgd10"), sanity=opts)
    table = results_table({"normal": clean_run, "masked": masked})
    assert list(table.index) == ["normal", "masked"] and "checks" in table.columns
    assert table.loc["normal", "checks"] == "ok" and table.loc["masked", "checks"].startswith("WARN:")
    assert masked.table().loc["model", "checks"] == row["checks"]


def test_final_evaluation_writes_checks(tmp_path, monkeypatch):
    import atkit.evaluation.sanity

    real = atkit.evaluation.sanity.run_sanity_checks
    seen = []

    def cheap(*args, **kwargs):  # the full budgets are for real models; the wiring is what is tested here
        seen.append(kwargs["n"])
        return real(*args, **kwargs, steps_attacks=("fgsm", "pgd2"), eps_steps=2, large_eps_steps=5,
                    square_queries=10)

    monkeypatch.setattr(atkit.evaluation.sanity, "run_sanity_checks", cheap)
    cfg = RunConfig.from_dict(dict(
        method="standard", dataset="synthetic", data={"n_train": 64, "n_test": 16}, model="small_cnn",
        batch_size=32, schedule="constant", epochs=1, max_steps_per_epoch=2, out_dir=str(tmp_path / "runs"),
        eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean", "pgd2"], "sanity_n_test": 8}))
    trainer = train(cfg, progress=False)
    ev = json.loads((trainer.run_dir / "eval.json").read_text())
    names = [c["name"] for c in ev["final"]["checks"]]
    assert names == [n for n in CHECK_NAMES if n != "dummy_protocol"]
    # The best checkpoint is checked separately only when it is not the final model's weights (one epoch: it is).
    separate_best = "best" in ev and ev["best"].get("same_weights_as") != "final"
    assert ev["final"]["checks"][0]["values"]["n"] == 8 and seen == [8] * (2 if separate_best else 1)
    assert all(ev[label]["checks"] for label in ("final", "best") if label in ev)
    assert isinstance(ev["final"]["warnings"], list)
    with pytest.raises(ConfigError, match="sanity_n_test"):
        RunConfig.from_dict({"eval": {"sanity_n_test": 0}})

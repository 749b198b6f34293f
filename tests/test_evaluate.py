"""Tests for atkit.evaluation.evaluate and run_autoattack (official AutoAttack, driven by atkit)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from atkit.evaluation import EvalResult, evaluate
from atkit.evaluation.autoattack import run_autoattack
from atkit.models.base import AtkitModel
from atkit.core.utils import ConfigError
from helpers import TinyConvNet, fit_blobs, make_blobs

NUM_CLASSES = 4
EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = TinyConvNet()
    fit_blobs(model)
    x_test, y_test = make_blobs(128, seed=1)
    # A few wrong labels, so that clean accuracy is below 100% and "correct" is not all-True.
    y_test[:6] = (y_test[:6] + 1) % NUM_CLASSES
    return model.eval(), x_test, y_test


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# -------------------------------------------------------------------------------- evaluate
ATTACKS = ("clean", "pgd10", "pgd20", "cw", "fgsm", "random")


@pytest.fixture(scope="module")
def result(trained):
    model, x, y = trained
    return evaluate(model, x, y, attacks=ATTACKS, batch_size=50)


def test_evaluate_keys_ranges_and_per_sample(trained, result):
    model, x, y = trained
    assert list(result.accuracy) == list(ATTACKS) and list(result.per_sample) == list(ATTACKS)
    assert result.n == 128 and result.num_classes == NUM_CLASSES
    for name in ATTACKS:
        flags = result.per_sample[name]
        assert flags.dtype == torch.bool and flags.shape == (128,) and flags.device.type == "cpu"
        assert 0.0 <= result.accuracy[name] <= 100.0
        assert result.accuracy[name] == pytest.approx(100.0 * flags.sum().item() / 128)
    assert torch.equal(result.per_sample["clean"], predictions(model, x) == y)
    assert result.accuracy["pgd20"] <= result.accuracy["clean"]
    assert result.accuracy["pgd20"] < result.accuracy["clean"] - 30  # percent; the attack bites
    assert result.threat == {"norm": "linf", "eps": EPS, "step_size": 2 / 255}
    assert result.details["pgd20"]["steps"] == 20 and result.details["cw"]["steps"] == 30
    assert result.details["cw"]["loss"] == "cw"


def test_mean_and_nrr_use_the_worst_case_over_robust_attacks(result):
    # Every robust attack that ran (fgsm and random are not robust-accuracy attacks), per sample.
    assert result.robust_attacks == ["pgd10", "pgd20", "cw"]
    assert result.robust_metric == "worst of pgd10, pgd20, cw"
    worst = result.per_sample["pgd10"] & result.per_sample["pgd20"] & result.per_sample["cw"]
    assert torch.equal(result.robust_per_sample(), worst)
    clean, rob = result.accuracy["clean"], 100.0 * worst.sum().item() / result.n
    assert result.robust_accuracy == pytest.approx(rob)
    assert rob <= min(result.accuracy[a] for a in ("pgd10", "pgd20", "cw"))
    assert result.mean == pytest.approx((clean + rob) / 2)
    assert result.nrr == pytest.approx(2 * clean * rob / (clean + rob))
    row = result.summary_row()
    assert row["robust"] == result.robust_accuracy and row["robust_metric"] == result.robust_metric


def test_no_robust_metric_without_robust_attack(trained):
    model, x, y = trained
    res = evaluate(model, x[:16], y[:16], attacks=("clean", "fgsm"))
    assert res.robust_metric is None and res.mean is None and res.nrr is None


def test_json_round_trip(result, tmp_path):
    path = tmp_path / "sub" / "eval.json"
    result.to_json(path)
    data = json.loads(path.read_text())
    assert set(data["per_sample"]["clean"]) <= {"0", "1"} and len(data["per_sample"]["clean"]) == 128
    back = EvalResult.from_json(path)
    assert back.accuracy == result.accuracy
    assert back.per_sample.keys() == result.per_sample.keys()
    for name in result.per_sample:
        assert torch.equal(back.per_sample[name], result.per_sample[name])
    assert (back.mean, back.nrr, back.robust_metric, back.n) == (result.mean, result.nrr, result.robust_metric, 128)
    assert back.threat == result.threat and back.details == result.details
    assert torch.equal(back.failed("pgd20"), (~result.per_sample["pgd20"]).nonzero().flatten())
    with pytest.raises(ConfigError):
        EvalResult.from_dict({"format": "something else"})


def test_evaluate_restores_model_and_rng(trained):
    _, x, y = trained
    torch.manual_seed(0)
    model = TinyConvNet().train()
    model.bn.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    running = model.bn.running_mean.clone()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    first = evaluate(model, x[:32], y[:32], attacks=("clean", "pgd10", "random"), batch_size=16)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.bn.running_mean, running)  # evaluated with eval-mode BatchNorm
    assert all(p.grad is None for p in model.parameters())
    second = evaluate(model, x[:32], y[:32], attacks=("clean", "pgd10", "random"), batch_size=16)
    for name in first.per_sample:  # seeded: the same result again
        assert torch.equal(first.per_sample[name], second.per_sample[name])


def test_batch_size_does_not_change_clean_result(trained, result):
    model, x, y = trained
    res = evaluate(model, x, y, attacks=("clean",), batch_size=7)
    assert torch.equal(res.per_sample["clean"], result.per_sample["clean"])


def test_pgd_name_parsing_and_errors(trained):
    model, x, y = trained
    res = evaluate(model, x[:8], y[:8], attacks=("pgd3", "cw5"))
    assert res.details["pgd3"]["steps"] == 3 and res.details["cw5"]["steps"] == 5
    with pytest.raises(ConfigError, match="'pgd-20'.*Did you mean 'pgd20'"):
        evaluate(model, x, y, attacks=("clean", "pgd-20"))
    for bad in ("pgd0", "pgd", "autoattack", "pgd010"):
        with pytest.raises(ConfigError):
            evaluate(model, x, y, attacks=(bad,))
    with pytest.raises(ConfigError, match="twice"):
        evaluate(model, x, y, attacks=("clean", "clean"))


def test_threat_resolution_and_validation(trained):
    model, x, y = trained
    res = evaluate(model, x[:8], y[:8], attacks=("random",), threat={"norm": "l2"})
    assert res.threat == {"norm": "l2", "eps": 128 / 255, "step_size": 32 / 255}

    class Threat:  # ThreatModel-like object
        norm, eps, step_size, steps = "linf", 4 / 255, 1 / 255, 10

    assert evaluate(model, x[:8], y[:8], attacks=("clean",), threat=Threat()).threat["eps"] == 4 / 255
    with pytest.raises(ConfigError, match="8/255"):
        evaluate(model, x, y, threat={"eps": 8})
    with pytest.raises(ConfigError):
        evaluate(model, x, y, threat={"epsilon": 0.1})
    with pytest.raises(ConfigError, match="255"):
        evaluate(model, (x * 255).to(torch.uint8), y)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        evaluate(model, x * 2 - 1, y)


# ------------------------------------------------------------------------------ AutoAttack
def _linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().amax(1)


def test_autoattack_custom_apgd_ce(trained):
    model, x, y = trained
    x, y = x[:32], y[:32]
    model.train()
    res = run_autoattack(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"], batch_size=16)
    assert model.training  # restored
    model.eval()
    assert _linf(res.x_adv - x).max().item() <= EPS + 1e-6
    assert res.x_adv.min().item() >= 0 and res.x_adv.max().item() <= 1
    clean = 100.0 * (predictions(model, x) == y).float().mean().item()
    assert torch.equal(res.correct, predictions(model, res.x_adv) == y)
    assert res.accuracy == pytest.approx(100.0 * res.correct.float().mean().item())
    assert res.per_attack["clean"] == pytest.approx(clean)
    assert res.accuracy <= clean and res.accuracy < clean - 30
    assert res.per_attack["apgd-ce"] == pytest.approx(res.accuracy)
    # Points that were already wrong are returned untouched.
    wrong = predictions(model, x) != y
    assert torch.equal(res.x_adv[wrong], x[wrong])


def test_autoattack_l2_bound(trained):
    model, x, y = trained
    eps = 64 / 255
    res = run_autoattack(model, x[:16], y[:16], eps=eps, norm="l2", version="custom", attacks=["apgd-ce"],
                         n_iter=10, n_restarts=1)
    assert (res.x_adv - x[:16]).flatten(1).norm(dim=1).max().item() <= eps + 1e-5
    assert res.accuracy < res.per_attack["clean"]


def test_autoattack_standard_with_few_classes(trained):
    # 4 outputs: APGD-T and FAB-T must target 3 classes, not AutoAttack's default 9.
    model, x, y = trained
    res = run_autoattack(model, x[:12], y[:12], eps=2 / 255, version="standard", batch_size=12,
                         n_iter=5, square_queries=20)
    assert res.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert list(res.per_attack) == ["clean", *res.attacks]
    values = list(res.per_attack.values())
    assert all(b <= a for a, b in zip(values, values[1:]))  # cumulative: never increases
    assert _linf(res.x_adv - x[:12]).max().item() <= 2 / 255 + 1e-6
    assert res.config["n_iter"] == 5


class _ForwardCounter:
    def __init__(self, model: nn.Module, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")

    def remove(self) -> None:
        self.handle.remove()


AA_KW = dict(eps=EPS, version="custom", attacks=["apgd-ce", "apgd-dlr"], batch_size=8, n_iter=10, n_restarts=1)


def test_autoattack_finished_state_is_not_recomputed(trained, tmp_path):
    model, x, y = trained
    x, y = x[:24], y[:24]
    state = tmp_path / "aa.json"
    counter = _ForwardCounter(model)
    first = run_autoattack(model, x, y, state_path=state, **AA_KW)
    full_calls, counter.calls = counter.calls, 0
    again = run_autoattack(model, x, y, state_path=state, **AA_KW)
    counter.remove()
    assert not first.resumed and first.ran_now == ["apgd-ce", "apgd-dlr"]
    assert again.resumed and again.ran_now == []
    assert counter.calls < full_calls / 3  # only checks and scoring, no attack iterations
    assert torch.equal(again.x_adv, first.x_adv) and torch.equal(again.correct, first.correct)
    assert again.per_attack == first.per_attack


def test_autoattack_interrupted_run_resumes_to_same_result(trained, tmp_path):
    model, x, y = trained
    x, y = x[:24], y[:24]
    counter = _ForwardCounter(model)
    reference = run_autoattack(model, x, y, **AA_KW)  # uninterrupted, no state file
    total = counter.calls
    counter.remove()

    state = tmp_path / "aa.json"
    counter = _ForwardCounter(model, fail_at=total // 2)
    with pytest.raises(KeyboardInterrupt):
        run_autoattack(model, x, y, state_path=state, **AA_KW)
    counter.remove()
    saved = json.loads(state.read_text())
    assert saved["done"] != ["apgd-ce", "apgd-dlr"]  # it really stopped part-way

    resumed = run_autoattack(model, x, y, state_path=state, **AA_KW)
    assert resumed.resumed and resumed.ran_now
    assert torch.equal(resumed.x_adv, reference.x_adv)
    assert torch.equal(resumed.correct, reference.correct)
    assert resumed.per_attack == reference.per_attack


def test_autoattack_state_from_other_run_is_refused(trained, tmp_path):
    model, x, y = trained
    x, y = x[:8], y[:8]
    state = tmp_path / "aa.json"
    run_autoattack(model, x, y, state_path=state, **AA_KW)
    with pytest.raises(ConfigError, match="eps"):
        run_autoattack(model, x, y, state_path=state, **{**AA_KW, "eps": 4 / 255})
    other = TinyConvNet().eval()
    with pytest.raises(ConfigError, match="model_sha256"):
        run_autoattack(other, x, y, state_path=state, **AA_KW)
    with pytest.raises(ConfigError, match="data_sha256"):
        run_autoattack(model, x.flip(0), y.flip(0), state_path=state, **AA_KW)


def test_autoattack_validation(trained):
    model, x, y = trained
    with pytest.raises(ConfigError, match="apgd-ce"):
        run_autoattack(model, x, y, eps=EPS, version="custom", attacks=["apgd_ce"])
    with pytest.raises(ConfigError, match="custom"):
        run_autoattack(model, x, y, eps=EPS, version="standard", attacks=["apgd-ce"])
    with pytest.raises(ConfigError, match="8/255"):
        run_autoattack(model, x, y, eps=8, version="custom", attacks=["apgd-ce"])
    with pytest.raises(ConfigError, match="Linf"):
        run_autoattack(model, x, y, eps=EPS, norm="Linf")
    three = TinyConvNet(num_classes=3).eval()
    with pytest.raises(ConfigError, match="at least 4"):
        run_autoattack(three, x, y % 3, eps=EPS, version="custom", attacks=["apgd-t"])


def test_evaluate_apgd_with_state_dir(trained, tmp_path):
    model, x, y = trained
    res = evaluate(model, x[:32], y[:32], attacks=("clean", "pgd20", "apgd"), batch_size=16, aa_state_dir=tmp_path)
    assert res.robust_metric == "worst of pgd20, apgd" and res.robust_attacks == ["pgd20", "apgd"]
    assert res.accuracy["apgd"] <= res.accuracy["clean"]
    assert (tmp_path / "apgd.json").exists()
    assert res.details["apgd"]["per_attack"]["clean"] == pytest.approx(res.accuracy["clean"])
    again = evaluate(model, x[:32], y[:32], attacks=("apgd",), batch_size=16, aa_state_dir=tmp_path)
    assert again.details["apgd"]["resumed"] and again.details["apgd"]["ran_now"] == []
    assert torch.equal(again.per_sample["apgd"], res.per_sample["apgd"])


# --------------------------------------------------------------------------- dummy classes
class HandDummy(AtkitModel):
    """2 real classes + 2 dummies on 1x2x2 images (pixels a, b, ., .), built so that the dummy of
    class 0 rises twice as fast as the wrong class 1 when pixels grow:

    ``z_0 = 1``, ``z_1 = 0.5 + 20 (b - 0.5)``, ``z_2 = 0.5 + 40 (a - 0.5)`` (dummy of 0), ``z_3 = -10``.

    At a ~ b ~ 0.5 the prediction is 0. PGD on the raw logits raises both a and b; the dummy wins
    (z_2 = 1.75 > z_1 = 1.13 at eps = 8/255), which the projected prediction counts as class 0:
    the published protocol reports full robustness. An attack on the merged logits instead lowers
    a and raises b, so z_1 > z_0 and the point is really broken.
    """

    def __init__(self) -> None:
        super().__init__(2, dummy_classes=True, in_channels=1)
        self.fc = nn.Linear(4, 4)
        self.penultimate_dim = self.third_to_last_dim = 4
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([1.0, 0.5 - 10.0, 0.5 - 20.0, -10.0]))
            self.fc.weight[1, 1] = 20.0
            self.fc.weight[2, 0] = 40.0

    def _trunk(self, x: torch.Tensor, need_third: bool):
        flat = x.flatten(1)
        return flat, flat


def test_dummy_protocols_published_over_reports():
    model = HandDummy()
    x = 0.5 + 0.002 * (2 * torch.rand(16, 1, 2, 2, generator=torch.Generator().manual_seed(0)) - 1)
    y = torch.zeros(16, dtype=torch.long)
    head = evaluate(model, x, y, attacks=("clean", "pgd20"))
    out = {head.protocol: head, **head.protocols}
    # The per-sample worst case heads the protocols: it is what a dummy-class model is reported by.
    assert list(out) == ["worst_case", "published", "adaptive", "adaptive_max"]
    for protocol, res in out.items():
        assert res.protocol == protocol and res.num_classes == 2
        assert res.accuracy["clean"] == 100.0
    assert out["published"].accuracy["pgd20"] == 100.0
    assert out["adaptive"].accuracy["pgd20"] == 0.0
    assert out["adaptive_max"].accuracy["pgd20"] == 0.0
    assert out["worst_case"].accuracy["pgd20"] == 0.0 and out["worst_case"].mean == 50.0
    assert list(evaluate(model, x, y, attacks=("clean",)).protocols) == ["published", "adaptive", "adaptive_max"]
    # One protocol asked for: that protocol alone, equal to its column of the full evaluation.
    published = evaluate(model, x, y, attacks=("pgd20",), protocol="published")
    assert published.protocol == "published" and not published.protocols
    assert torch.equal(published.per_sample["pgd20"], out["published"].per_sample["pgd20"])
    assert model.training  # untouched by wrapping it in MergedDummyModel


def test_protocol_errors(trained):
    model, x, y = trained
    with pytest.raises(ConfigError, match="dummy"):
        evaluate(model, x, y, protocol="adaptive")
    with pytest.raises(ConfigError, match="dummy"):
        evaluate(model, x, y, protocol=["published", "adaptive"])
    with pytest.raises(ConfigError, match="adaptive"):
        evaluate(HandDummy(), x[:, :1, :2, :2], y % 2, protocol="adaptiv")


def test_a_printed_result_gives_every_accuracy_with_its_interval_and_n_then_its_warnings():
    flags = {"clean": torch.tensor([1, 1, 1, 0], dtype=torch.bool), "pgd20": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}
    result = EvalResult(accuracy={"clean": 75.0, "pgd20": 50.0}, per_sample=flags, n=4, notes=["at chance level"])
    lines = str(result).splitlines()
    assert lines[0].split() == ["clean:", "75.00", "%", "[30.1,", "95.4]", "(n=4)"]
    assert lines[1].split()[:2] == ["pgd20:", "50.00"]
    assert lines[2].startswith("      robust: 50.00 % [15.0, 85.0] (n=4), pgd20; Mean 62.50, NRR 60.00")
    assert lines[3] == "warning: at chance level"
    only_robust = EvalResult(accuracy={"pgd20": 50.0}, per_sample={"pgd20": flags["pgd20"]}, n=4)
    assert "Mean" not in str(only_robust) and "robust: 50.00 %" in str(only_robust)

"""Fast adversarial training: FGSM-RS and N-FGSM against formulas computed here, a tiny run of each learns, and
catastrophic-overfitting detection (the rule on both sides of its thresholds, and the trainer recording it)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from atkit.training.catastrophic_overfitting import FGSM_GAP_POINTS, PGD_DROP_POINTS, catastrophic_overfitting
from atkit.experiments.claims import model_learned
from atkit.training.config import RunConfig
from atkit.methods import StepContext, get_method
from atkit.training.trainer import Trainer, train
from atkit.core.utils import ConfigError
from helpers import TinyBatch, ref_ce

EPS = 8 / 255


def two_class_linear(seed: int = 0) -> nn.Module:
    """``z = W flatten(x) + b`` with two classes: for label 0 the input gradient of CE is ``p_1 (w_1 - w_0)``, so its
    sign is ``sign(w_1 - w_0)`` for every input (and the opposite for label 1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def gradient_sign(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
    w = model[1].weight.detach()
    s = torch.sign(w[1] - w[0]).view(1, 3, 8, 8)
    return torch.where(y.view(-1, 1, 1, 1) == 0, s, -s)


def mid_grey_batch(n: int = 64) -> TinyBatch:
    """Images at 0.5 (so neither the noise nor the step reaches the [0, 1] clip), labels 0/1."""
    return TinyBatch(torch.full((n, 3, 8, 8), 0.5), torch.arange(n) % 2)


# -- FGSM-RS (Wong et al. 2020) ----------------------------------------------------------------------------
def test_fgsm_rs_is_one_projected_step_of_1_25_eps_from_a_uniform_start():
    method = get_method("fgsm_rs", threat={"eps": EPS})
    assert method.params.alpha_ratio == 1.25 and method.step_size == pytest.approx(1.25 * EPS)
    assert method.bn_mode == "train" and method.single_step
    model, batch = two_class_linear(), mid_grey_batch()
    torch.manual_seed(7)
    x_adv = method.attack(model, batch.x, batch.y)
    torch.manual_seed(7)
    start = torch.empty_like(batch.x).uniform_(-EPS, EPS)  # the same draw, computed here
    expected = batch.x + (start + 1.25 * EPS * gradient_sign(model, batch.y)).clamp(-EPS, EPS)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-7)
    delta = x_adv - batch.x
    assert delta.abs().max() <= EPS + 1e-7  # projected to the eps-ball
    # The step size: coordinates the projection left alone moved by exactly 1.25 eps from the start.
    free = delta.abs() < EPS - 1e-6
    assert free.float().mean() > 0.3  # P(start + 1.25 eps stays inside) = 0.375
    torch.testing.assert_close((delta - start)[free], 1.25 * EPS * gradient_sign(model, batch.y).expand_as(delta)[free],
                               rtol=0, atol=1e-6)
    # ... and every coordinate moved in the gradient's sign direction, never against it.
    assert ((delta - start) * gradient_sign(model, batch.y) >= -1e-7).all()


def test_fgsm_rs_start_is_uniform_in_the_ball_and_inside_the_image():
    method = get_method("fgsm_rs", threat={"eps": EPS}, alpha_ratio=0.0)  # no step: x' = x + start
    model, batch = two_class_linear(), mid_grey_batch(256)
    torch.manual_seed(3)
    delta = (method.attack(model, batch.x, batch.y) - batch.x).flatten()
    assert delta.abs().max() <= EPS + 1e-7 and delta.abs().max() > 0.99 * EPS
    quarters = torch.histc(delta, bins=4, min=-EPS, max=EPS) / delta.numel()  # 49,152 draws
    assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.01), quarters
    edge = TinyBatch(torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))  # black images: start clipped to 0
    out = get_method("fgsm_rs", threat={"eps": EPS}).attack(model, edge.x, edge.y)
    assert out.min() >= 0 and out.max() <= EPS + 1e-7


# -- N-FGSM (de Jorge et al. 2022) ---------------------------------------------------------------------------
def test_n_fgsm_is_noise_of_2_eps_plus_one_step_of_eps_without_projection():
    method = get_method("n_fgsm", threat={"eps": EPS})
    assert (method.params.noise_ratio, method.params.step_ratio, method.params.clip_ratio) == (2.0, 1.0, None)
    assert method.bn_mode == "train" and method.single_step
    model, batch = two_class_linear(), mid_grey_batch()
    torch.manual_seed(11)
    x_adv = method.attack(model, batch.x, batch.y)
    torch.manual_seed(11)
    eta = torch.empty_like(batch.x).uniform_(-2 * EPS, 2 * EPS)
    expected = batch.x + eta + EPS * gradient_sign(model, batch.y)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-7)
    delta = (x_adv - batch.x).abs()
    assert delta.max() <= 3 * EPS + 1e-7  # (k + 1) eps
    assert delta.max() > 2.9 * EPS and (delta > EPS + 1e-6).float().mean() > 0.4  # not projected to the eps-ball
    # The step: exactly eps along the gradient sign from the noise.
    torch.testing.assert_close(x_adv - batch.x - eta, EPS * gradient_sign(model, batch.y).expand_as(eta),
                               rtol=0, atol=1e-6)


def test_n_fgsm_noise_is_uniform_in_k_eps_and_the_result_stays_an_image():
    model, batch = two_class_linear(), mid_grey_batch(256)
    torch.manual_seed(5)
    noise = (get_method("n_fgsm", threat={"eps": EPS}, step_ratio=0.0).attack(model, batch.x, batch.y)
             - batch.x).flatten()
    assert noise.abs().max() <= 2 * EPS + 1e-7 and noise.abs().max() > 1.98 * EPS
    quarters = torch.histc(noise, bins=4, min=-2 * EPS, max=2 * EPS) / noise.numel()
    assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.01), quarters
    # k = 3: the noise scales with k.
    torch.manual_seed(5)
    wide = (get_method("n_fgsm", threat={"eps": EPS}, noise_ratio=3.0, step_ratio=0.0).attack(model, batch.x, batch.y)
            - batch.x)
    assert wide.abs().max() > 2.9 * EPS
    # The released code's optional clip (c = 1) puts it back into the eps-ball.
    clipped = get_method("n_fgsm", threat={"eps": EPS}, clip_ratio=1.0).attack(model, batch.x, batch.y) - batch.x
    assert clipped.abs().max() <= EPS + 1e-7
    edge = torch.ones(8, 3, 8, 8)
    out = get_method("n_fgsm", threat={"eps": EPS}).attack(model, edge, torch.zeros(8, dtype=torch.long))
    assert out.max() <= 1.0 and out.min() >= 1.0 - 3 * EPS - 1e-7


def test_n_fgsm_refuses_l2_and_a_random_start_it_does_not_use():
    with pytest.raises(ConfigError, match="L-inf"):
        get_method("n_fgsm", threat={"norm": "l2"})
    with pytest.raises(ConfigError, match="random_start"):
        get_method("n_fgsm", random_start="none")
    with pytest.raises(ConfigError, match="n_fgsm.noise_ratio"):
        get_method("n_fgsm", noise_ratio=-1.0)


@pytest.mark.parametrize("name", ["fgsm_rs", "n_fgsm"])
def test_loss_is_the_cross_entropy_on_the_single_step_example(name):
    method = get_method(name, threat={"eps": EPS})
    model, batch = two_class_linear(), mid_grey_batch(16)
    torch.manual_seed(2)
    out = method.loss(model, batch, StepContext())
    torch.manual_seed(2)
    x_adv = method.attack(model, batch.x, batch.y)
    torch.testing.assert_close(out.x_adv, x_adv)
    with torch.no_grad():
        expected = ref_ce(model(x_adv).double(), batch.y).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


# -- a tiny run learns ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fgsm_rs", "n_fgsm"])
def test_a_tiny_run_learns(tmp_path, name):
    cfg = RunConfig.from_dict(dict(
        method=name, dataset="synthetic", data={"n_train": 512, "n_test": 128, "image_size": 16}, model="small_cnn",
        batch_size=64,
        schedule="constant", lr=0.05, epochs=3, out_dir=str(tmp_path / "runs"), device="cpu",
        eval={"n_test": 128, "pgd_steps": 5, "final_attacks": ["clean"], "sanity": False}))
    trainer = train(cfg, progress=False)
    last = trainer.history[-1]
    learned = model_learned(last["test_clean_acc"], 10, n=128, name=name)
    assert learned.learned, learned.describe()  # 10 classes: chance 10 %, the guard asks for 20 % and its interval
    assert last["train_loss"] < trainer.history[0]["train_loss"]
    # Single-step methods get FGSM beside PGD each epoch (what the CO check reads); no warning on a healthy run.
    assert all("test_fgsm_acc" in r and "test_pgd5_acc" in r for r in trainer.history)
    assert json.loads((trainer.run_dir / "metrics.json").read_text())["warnings"] == []


# -- catastrophic overfitting ----------------------------------------------------------------------------------
def test_rule_a_pgd_falls_from_its_best_while_fgsm_rises():
    assert PGD_DROP_POINTS == 20.0 and FGSM_GAP_POINTS == 30.0
    flagged = catastrophic_overfitting([40.0, 45.0, 24.9], [50.0, 52.0, 52.1])
    assert flagged is not None and "fell 20.1 points" in flagged and "rose" in flagged
    assert catastrophic_overfitting([40.0, 45.0, 25.0], [50.0, 52.0, 54.9]) is None  # a drop of exactly 20 is allowed
    assert catastrophic_overfitting([40.0, 45.0, 20.0], [50.0, 52.0, 49.0]) is None  # FGSM fell too: no CO signature
    assert catastrophic_overfitting([40.0, 45.0, 24.0], [50.0, 52.0, 52.0]) is None  # FGSM flat: not a rise
    # The best so far, not the previous epoch: a slow slide is caught once it totals more than 20 points.
    assert catastrophic_overfitting([45.0, 38.0, 31.0, 24.0], [52.0, 53.0, 53.5, 54.0]) is not None
    assert catastrophic_overfitting([45.0, 38.0, 31.0], [52.0, 53.0, 53.5]) is None


def test_rule_b_fgsm_far_above_pgd():
    flagged = catastrophic_overfitting([5.0], [35.1])
    assert flagged is not None and "by 30.1 points" in flagged
    assert catastrophic_overfitting([5.0], [35.0]) is None
    assert catastrophic_overfitting([50.0, 1.0], [55.0, 31.5]) is not None  # CO with FGSM falling a little
    assert catastrophic_overfitting([float("nan"), 40.0], [float("nan"), 50.0]) is None  # NaN epochs are skipped
    assert catastrophic_overfitting([], []) is None


def test_the_trainer_warns_in_the_log_line_and_metrics_json(tmp_path, monkeypatch, capsys):
    """Scripted per-epoch accuracies (the evaluation monkeypatched): CO at epoch 3 of 4, nothing before."""
    script = iter([{"clean": 40.0, "pgd2": 30.0, "fgsm": 33.0}, {"clean": 50.0, "pgd2": 38.0, "fgsm": 41.0},
                   {"clean": 70.0, "pgd2": 2.0, "fgsm": 68.0}, {"clean": 72.0, "pgd2": 1.0, "fgsm": 71.0}])
    attacks_asked = []

    def scripted(self, model, x, y, **kwargs):
        attacks_asked.append(kwargs["attacks"])
        return type("Result", (), {"accuracy": next(script)})()

    monkeypatch.setattr(Trainer, "evaluate_sharded", scripted)
    cfg = RunConfig.from_dict(dict(
        method="fgsm_rs", dataset="synthetic", data={"n_train": 128, "n_test": 32}, model="small_cnn",
        model_params={"width": 4, "hidden": 8}, batch_size=64, schedule="constant", epochs=4,
        max_steps_per_epoch=1, out_dir=str(tmp_path / "runs"), device="cpu", threat={"steps": 2},
        eval={"n_test": 32, "pgd_steps": 2, "final_attacks": ["clean"]}))
    trainer = Trainer.new(cfg, progress=True)
    trainer.fit()
    assert attacks_asked[0] == ["clean", "pgd2", "fgsm"]
    warnings = json.loads((trainer.run_dir / "metrics.json").read_text())["warnings"]
    assert [w["epoch"] for w in warnings] == [3, 4] and warnings[0]["kind"] == "catastrophic_overfitting"
    assert "fell 36.0 points" in warnings[0]["message"]
    assert [bool(r.get("warning")) for r in trainer.history] == [False, False, True, True]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert "WARNING: catastrophic overfitting suspected" in lines[2] and "WARNING" not in lines[1]
    assert trainer.best_epoch == 2  # selection by PGD keeps the epoch before the collapse


def test_multi_step_methods_are_not_checked(tmp_path):
    cfg = RunConfig.from_dict(dict(
        method="pgd_at", dataset="synthetic", data={"n_train": 128, "n_test": 32}, model="small_cnn",
        model_params={"width": 4, "hidden": 8}, batch_size=64, schedule="constant", epochs=1, out_dir=str(tmp_path),
        device="cpu", threat={"steps": 2}, eval={"n_test": 32, "pgd_steps": 2, "final_attacks": ["clean"]}))
    trainer = train(cfg, progress=False, evaluate_final=False)
    assert "test_fgsm_acc" not in trainer.history[0] and "warning" not in trainer.history[0]


def test_composites_of_single_step_methods_are_checked_too():
    assert get_method("fgsm_rs+rpat").single_step and get_method("n_fgsm+ducat", start_epoch=0).single_step
    assert not get_method("pgd_at+ducat").single_step and not get_method("trades+rpat").single_step

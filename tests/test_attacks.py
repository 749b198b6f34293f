"""Tests for atkit.attacks: budgets, random starts, FGSM, model-state hygiene, strength orderings,
targeted PGD, intermediate iterates, and the attack objectives against hand computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from atkit.attacks import (ATTACK_OBJECTIVES, attack_mode, eval_logits, fgsm, frozen_eval, pgd, random_noise,
                           random_start_delta)
from atkit.core.utils import ConfigError
from helpers import TinyConvNet, fit_blobs, make_blobs

NUM_CLASSES = 4
EPS = 8 / 255
STEP = 2 / 255
L2_EPS = 128 / 255
L2_STEP = 32 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


def train_tiny(steps: int = 200) -> TinyConvNet:
    torch.manual_seed(0)
    return fit_blobs(TinyConvNet(), steps=steps)


@pytest.fixture(scope="module")
def trained():
    model = train_tiny()
    x, y = make_blobs(256, seed=1)
    return model, x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().amax(1)


def l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


# ------------------------------------------------------------------------------------ budgets
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", sorted(ATTACK_OBJECTIVES))
@pytest.mark.parametrize("random_start", ["uniform", "normal", None])
def test_pgd_stays_in_ball_and_image_range(trained, norm, loss, random_start):
    model, x, y = trained
    x, y = x[:16], y[:16]
    eps, step = (EPS, STEP) if norm == "linf" else (L2_EPS, L2_STEP)
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=4, norm=norm, loss=loss, random_start=random_start)
    size = linf(x_adv - x) if norm == "linf" else l2(x_adv - x)
    assert size.max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    if random_start is not None or loss not in ("kl", "sq"):
        # It moved, so the bound is not met trivially by x_adv == x. (The divergences have zero
        # gradient at x' = x, which is why TRADES starts from x + 0.001 N(0, 1).)
        assert size.max().item() > 0.5 * eps


def test_uniform_start_fills_linf_ball():
    torch.manual_seed(0)
    x = torch.full((64, 3, 8, 8), 0.5)  # away from the [0,1] edges, so nothing is clipped
    delta = random_start_delta(x, EPS, "linf", "uniform")
    assert delta.abs().max().item() <= EPS
    assert linf(delta).min().item() > 0.95 * EPS
    # Uniform on [-eps, eps]: mean |delta| = eps/2, half the coordinates below eps/2 in size.
    assert abs(delta.abs().mean().item() - EPS / 2) < 0.02 * EPS
    assert abs((delta.abs() < EPS / 2).float().mean().item() - 0.5) < 0.02


def test_uniform_start_fills_l2_ball():
    torch.manual_seed(0)
    x = torch.full((64, 3, 8, 8), 0.5)
    delta = random_start_delta(x, L2_EPS, "l2", "uniform")
    norms = l2(delta)
    assert norms.max().item() <= L2_EPS + 1e-6
    # In 192 dimensions almost all volume of the ball is near its surface.
    assert norms.min().item() > 0.9 * L2_EPS
    directions = delta.flatten(1) / norms[:, None]
    cosine = directions @ directions.T - torch.eye(64)
    assert cosine.abs().max().item() < 0.5  # directions differ between samples


def test_pgd_uniform_start_without_steps_is_the_start(trained):
    model, x, y = trained
    torch.manual_seed(3)
    x_start = pgd(model, x[:8], y[:8], eps=EPS, step_size=STEP, steps=0, random_start="uniform")
    torch.manual_seed(3)
    expected = (x[:8] + torch.empty_like(x[:8]).uniform_(-EPS, EPS)).clamp(0, 1)
    assert torch.allclose(x_start, expected, atol=1e-7)


def test_fgsm_is_one_signed_step(trained):
    model, x, y = trained
    x, y = x[:32], y[:32]
    x_req = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    expected = (x + EPS * grad.sign()).clamp(0, 1)
    assert torch.allclose(fgsm(model, x, y, eps=EPS), expected, atol=1e-7)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", L2_EPS)])
def test_random_noise_bounded(norm, eps):
    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8)
    noisy = random_noise(x, eps=eps, norm=norm)
    size = linf(noisy - x) if norm == "linf" else l2(noisy - x)
    assert size.max().item() <= eps + 1e-6
    assert noisy.min().item() >= 0 and noisy.max().item() <= 1
    assert size.min().item() > 0
    assert not torch.equal(noisy, random_noise(x, eps=eps, norm=norm))


# ----------------------------------------------------------------------------- model hygiene
def _flags(model: nn.Module) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("was_training", [True, False])
def test_mode_and_requires_grad_restored(bn_mode, was_training):
    torch.manual_seed(0)
    model = TinyConvNet()
    model.train(was_training)
    model.conv.bias.requires_grad_(False)  # a mixed pattern, so "all True" is not what is restored
    before = _flags(model)
    x, y = make_blobs(8, seed=2)
    pgd(model, x, y, eps=EPS, step_size=STEP, steps=2, bn_mode=bn_mode)
    assert model.training == was_training
    assert _flags(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_mode_restored_after_exception_in_forward():
    torch.manual_seed(0)
    model = TinyConvNet().train()
    model.fc.weight.requires_grad_(False)
    before = _flags(model)
    calls = {"n": 0}

    def fail_on_second_call(module, inputs):
        calls["n"] += 1
        if calls["n"] == 2:
            assert not module.training  # inside the attack: eval mode was set
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(fail_on_second_call)
    x, y = make_blobs(8, seed=2)
    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, bn_mode="eval")
    handle.remove()
    assert model.training
    assert _flags(model) == before


def test_attack_mode_context_restores_on_exception():
    model = TinyConvNet().train()
    with pytest.raises(ValueError):
        with attack_mode(model, "eval"):
            assert not model.training and not any(_flags(model))
            raise ValueError
    assert model.training and all(_flags(model))


def test_eval_logits_use_running_stats_leave_them_and_restore_the_mode():
    model = TinyConvNet().train()
    x, _ = make_blobs(8, seed=2)
    model(x)  # running statistics now differ from this batch's
    stats = (model.bn.running_mean.clone(), model.bn.running_var.clone())
    logits = eval_logits(model, x.requires_grad_())
    assert model.training and not logits.requires_grad
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(model.bn.running_var, stats[1])
    with torch.no_grad():
        assert torch.equal(logits, model.eval()(x))
        assert not torch.allclose(logits, model.train()(x))
    with pytest.raises(ValueError):
        with frozen_eval(model.train()):
            assert not model.training and not torch.is_grad_enabled()
            raise ValueError
    assert model.training and torch.is_grad_enabled()


def test_no_parameter_grad_is_filled(trained):
    model, x, y = trained
    model.zero_grad(set_to_none=True)
    for loss in ("ce", "kl", "cw"):
        pgd(model, x[:16], y[:16], eps=EPS, step_size=STEP, steps=2, loss=loss)
    fgsm(model, x[:16], y[:16], eps=EPS)
    assert all(p.grad is None for p in model.parameters())


def test_bn_running_stats_updated_only_in_train_mode():
    torch.manual_seed(0)
    model = TinyConvNet()
    x, y = make_blobs(16, seed=3)
    before = (model.bn.running_mean.clone(), model.bn.running_var.clone(), int(model.bn.num_batches_tracked))
    pgd(model, x, y, eps=EPS, step_size=STEP, steps=2, bn_mode="eval")
    assert torch.equal(model.bn.running_mean, before[0]) and torch.equal(model.bn.running_var, before[1])
    assert int(model.bn.num_batches_tracked) == before[2]
    pgd(model, x, y, eps=EPS, step_size=STEP, steps=2, bn_mode="train")
    assert not torch.equal(model.bn.running_mean, before[0])
    assert int(model.bn.num_batches_tracked) > before[2]


# ------------------------------------------------------------------------ strength orderings
# PGD's outcome per sample is not monotone in steps or eps, so orderings are checked on
# accuracies over 256 samples with a slack of 1% (~2 samples).
SLACK = 0.01


def test_strength_ordering(trained):
    model, x, y = trained
    clean = accuracy(model, x, y)
    acc_fgsm = accuracy(model, fgsm(model, x, y, eps=EPS), y)
    torch.manual_seed(0)
    acc_pgd10 = accuracy(model, pgd(model, x, y, eps=EPS, step_size=STEP, steps=10), y)
    torch.manual_seed(0)
    acc_pgd20 = accuracy(model, pgd(model, x, y, eps=EPS, step_size=STEP, steps=20), y)
    assert clean > 0.95  # the task was learned; otherwise the comparison says nothing
    assert acc_fgsm <= clean
    assert acc_pgd10 <= acc_fgsm + SLACK
    assert acc_pgd20 <= acc_pgd10 + SLACK
    assert acc_pgd20 < clean - 0.3  # the attack is effective at 8/255 on this model


def test_accuracy_non_increasing_in_eps(trained):
    model, x, y = trained
    accs = []
    for eps_px in (0, 2, 4, 8, 16):
        torch.manual_seed(0)
        eps = eps_px / 255
        accs.append(accuracy(model, pgd(model, x, y, eps=eps, step_size=eps / 4, steps=20), y))
    assert accs[0] == accuracy(model, x, y)  # eps = 0 leaves the images untouched
    for smaller, larger in zip(accs, accs[1:]):
        assert larger <= smaller + SLACK
    assert accs[-1] < accs[0] - 0.5


def test_targeted_pgd_reaches_target_more_often(trained):
    model, x, y = trained
    target = (y + 1) % NUM_CLASSES
    torch.manual_seed(0)
    x_t = pgd(model, x, target, eps=EPS, step_size=STEP, steps=20, targeted=True)
    torch.manual_seed(0)
    x_u = pgd(model, x, y, eps=EPS, step_size=STEP, steps=20)
    with torch.no_grad():
        hit_targeted = (model(x_t).argmax(1) == target).float().mean().item()
        hit_untargeted = (model(x_u).argmax(1) == target).float().mean().item()
    assert hit_targeted > hit_untargeted + 0.1


def test_l2_pgd_is_effective(trained):
    model, x, y = trained
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, eps=L2_EPS, step_size=L2_STEP, steps=10, norm="l2")
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.3


# ---------------------------------------------------------------------------- iterates
@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_return_iterate_at_matches_shorter_run(trained, loss):
    model, x, y = trained
    x, y = x[:32], y[:32]
    torch.manual_seed(5)
    x_adv, x_iter = pgd(model, x, y, eps=EPS, step_size=STEP, steps=10, loss=loss, return_iterate_at=3)
    torch.manual_seed(5)
    x_three = pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, loss=loss)
    torch.manual_seed(5)
    x_ten = pgd(model, x, y, eps=EPS, step_size=STEP, steps=10, loss=loss)
    assert torch.equal(x_iter, x_three)
    assert torch.equal(x_adv, x_ten)
    assert not torch.equal(x_iter, x_adv)
    torch.manual_seed(5)
    _, x_zero = pgd(model, x, y, eps=EPS, step_size=STEP, steps=10, loss=loss, return_iterate_at=0)
    torch.manual_seed(5)
    assert torch.equal(x_zero, pgd(model, x, y, eps=EPS, step_size=STEP, steps=0, loss=loss))


def test_return_iterate_out_of_range():
    model = TinyConvNet().eval()
    x, y = make_blobs(4, seed=0)
    with pytest.raises(ConfigError):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=3, return_iterate_at=4)


# ------------------------------------------------------------------------- objectives
LOGITS = [[2.0, 1.0, 0.5, -1.0], [0.1, 0.3, 3.0, 0.2], [-0.5, 1.5, 1.4, 0.0]]
CLEAN = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0], [0.5, 0.5, 0.5, 0.5]]
LABELS = [0, 1, 2]  # row 0: true class on top; rows 1-2: a wrong class on top


def _softmax(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _by_hand(name, row, clean_row, label):
    others = [v for k, v in enumerate(row) if k != label]
    if name == "ce":
        return -math.log(_softmax(row)[label])
    if name == "cw":
        return max(others) - row[label]
    if name == "dlr":
        ranked = sorted(row, reverse=True)
        return -(row[label] - max(others)) / (ranked[0] - ranked[2] + 1e-12)
    p, q = _softmax(clean_row), _softmax(row)
    if name == "kl":
        return sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))
    if name == "sq":
        return sum((pk - qk) ** 2 for pk, qk in zip(p, q))
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["ce", "cw", "dlr", "kl", "sq"])
def test_objective_matches_hand_computation(name):
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    clean = torch.tensor(CLEAN, dtype=torch.float64)
    y = torch.tensor(LABELS)
    got = ATTACK_OBJECTIVES[name](logits, y, clean)
    expected = [_by_hand(name, r, c, lab) for r, c, lab in zip(LOGITS, CLEAN, LABELS)]
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_kl_objective_needs_clean_logits():
    with pytest.raises(ValueError):
        ATTACK_OBJECTIVES["kl"](torch.zeros(2, 3), torch.tensor([0, 1]), None)


# ---------------------------------------------------------------------------- validation
def test_eps_in_pixel_units_is_rejected():
    model = TinyConvNet().eval()
    x, y = make_blobs(4, seed=0)
    with pytest.raises(ConfigError, match="8/255"):
        pgd(model, x, y, eps=8, step_size=STEP, steps=1)
    with pytest.raises(ConfigError, match="2/255"):
        pgd(model, x, y, eps=EPS, step_size=2, steps=1)
    with pytest.raises(ConfigError):
        pgd(model, x, y, eps=-0.1, step_size=STEP, steps=1)


def test_unknown_loss_and_norm_are_rejected():
    model = TinyConvNet().eval()
    x, y = make_blobs(4, seed=0)
    with pytest.raises(ConfigError, match="'cee'.*'ce'"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, loss="cee")
    with pytest.raises(ConfigError, match="linf"):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, norm="Linf")
    with pytest.raises(ConfigError):
        pgd(model, x, y, eps=EPS, step_size=STEP, steps=1, bn_mode="training")

"""The robustness-loss experiment (FAIT/MER paper, Fig. 4): R and R' computed independently, and its claims."""
from __future__ import annotations

import pytest
import torch

from atkit.attacks import pgd
from atkit.experiments.robustness_loss import RobustnessLoss, robustness_losses
from helpers import TinyConvNet, fit_blobs, make_blobs, ref_kl_rows, ref_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


def test_losses_equal_the_formulas_on_the_same_attack():
    torch.manual_seed(0)
    net = fit_blobs(TinyConvNet())
    x, _ = make_blobs(16, seed=2)
    torch.manual_seed(5)
    r, r_star = robustness_losses(net, x, eps=8 / 255, step_size=2 / 255, steps=5, interpolation=2)
    torch.manual_seed(5)  # the same normal start
    x_adv, x_star = pgd(net, x, torch.zeros(16, dtype=torch.long), eps=8 / 255, step_size=2 / 255, steps=5,
                        loss="kl", random_start="normal", bn_mode="eval", return_iterate_at=2)
    with torch.no_grad():
        p, p_star, p_adv = (ref_softmax(net(v)) for v in (x, x_star, x_adv))
    assert torch.allclose(r, ref_kl_rows(p, p_adv), atol=1e-6)
    assert torch.allclose(r_star, ref_kl_rows(p, p_star) + ref_kl_rows(p_star, p_adv), atol=1e-6)
    assert (r > 0).all() and not torch.equal(r, r_star)


def _record(per_image, seeds_r):
    models = [{"method": m, "seed": s, "clean_acc": 80.0, "R": r, "R_interpolated": r / 2}
              for s, rs in seeds_r.items() for m, r in rs.items()]
    return {"num_classes": 10, "n_eval": 1000, "models": models, "_per_image": per_image}


def test_claims_on_both_sides_of_their_edges():
    exp = RobustnessLoss()
    p = exp.params({})
    below = {"R": [1.0] * 50, "R_interpolated": [0.5 + 0.01 * (i % 3) for i in range(50)]}
    above = {"R": [0.5] * 50, "R_interpolated": [1.0 + 0.01 * (i % 3) for i in range(50)]}
    mixed = {"R": [1.0, 0.0] * 25, "R_interpolated": [0.0, 1.0] * 25}
    one_seed = {0: {"trades": 0.2, "mer": 0.1}}
    checks = exp.judge(_record({"trades s0": below, "mer s0": above}, one_seed), p)
    assert checks[0].agrees is True and checks[1].agrees is False
    assert checks[2].agrees is None and "one training run per method" in checks[2].verdict  # a method claim
    assert exp.judge(_record({"trades s0": mixed}, one_seed), p)[0].agrees is None
    three = {s: {"trades": 0.20 + 0.001 * s, "mer": 0.10 + 0.002 * s} for s in range(3)}
    assert exp.judge(_record({}, three), p)[-1].agrees is True
    worse = {s: {"trades": 0.10 + 0.001 * s, "mer": 0.20 + 0.002 * s} for s in range(3)}
    assert exp.judge(_record({}, worse), p)[-1].agrees is False
    unclear = {0: {"trades": 0.1, "mer": 0.2}, 1: {"trades": 0.2, "mer": 0.1}, 2: {"trades": 0.15, "mer": 0.15}}
    assert exp.judge(_record({}, unclear), p)[-1].agrees is None

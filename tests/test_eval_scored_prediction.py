"""Every attack, under every DUCAT protocol, decides success by the prediction that is scored.

A constructed dummy-class model where the argmax of what the attack's loss sees differs from the scored
(projected) prediction on every image, and one input channel moves the logits so that an explicit eps-step flips
the scored prediction of every image: the true robust accuracy is 0 %, computed here by that explicit step, and
every attack under every protocol must find it. Before the scored view (atkit.evaluation.target), AutoAttack under
the adaptive protocol reported 100 % on this model, because its own bookkeeping never attacked a point whose
merged argmax was already wrong.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from atkit.evaluation import evaluate
from atkit.evaluation.target import ScoredView, lift_to_scored
from atkit.models import MergedDummyModel, predict_labels
from atkit.models.base import AtkitModel

C = 10
EPS = 8 / 255
pytestmark = pytest.mark.usefixtures("one_thread")


class Disagreeing(AtkitModel):
    """2C logits of a 1x4x4 image, from its label (carried in pixel (0, 3, 3) as y/10) and its mean brightness s.

    ``kind="merged"``: true class 5.0, a rival class 4.8 and its dummy 4.75 (so the logsumexp-merged
    argmax is the rival while the projected prediction is the true class). ``kind="raw"``: the true class's dummy
    5.0, the true class 4.9, the rival 4.8 (so the raw argmax is a dummy while the projected prediction is the true
    class). In both, ``a (s - 0.5)`` is added to the rival (and its dummy) and taken from the true class (half of it
    from the true class's dummy, so that no loss is flat along s): a step of +eps on every signal pixel closes the
    gap (slope a = 20, so 2 a eps = 1.25 > 0.2)."""

    def __init__(self, kind: str) -> None:
        super().__init__(C, dummy_classes=True, in_channels=1)
        self.kind = kind
        self.penultimate_dim = self.third_to_last_dim = 16
        self.slope = 20.0

    def _trunk(self, x: Tensor, need_third: bool):
        flat = x.flatten(1)
        return flat, flat

    def forward(self, x: Tensor, return_features: bool = False):
        y = torch.round(x[:, 0, 3, 3].detach() * 10).long().clamp(0, C - 1)
        rival = (y + 1) % C
        s = x[:, 0, :3, :].mean(dim=(1, 2)) - 0.5  # the label pixel is not part of the signal
        logits = torch.full((x.shape[0], 2 * C), -5.0, dtype=x.dtype, device=x.device)
        rows = torch.arange(x.shape[0])
        if self.kind == "merged":
            base = {"true": 5.0, "true_dummy": -5.0, "rival": 4.8, "rival_dummy": 4.75}
        else:
            base = {"true": 4.9, "true_dummy": 5.0, "rival": 4.8, "rival_dummy": -5.0}
        move = self.slope * s
        logits = logits.index_put((rows, y), torch.full_like(move, base["true"]) - move)
        logits = logits.index_put((rows, y + C), torch.full_like(move, base["true_dummy"]) - move / 2)
        logits = logits.index_put((rows, rival), torch.full_like(move, base["rival"]) + move)
        logits = logits.index_put((rows, rival + C), torch.full_like(move, base["rival_dummy"]) + move)
        return logits


def images(n: int = 20) -> tuple[Tensor, Tensor]:
    y = torch.arange(n) % C
    x = torch.full((n, 1, 4, 4), 0.5)
    x[:, 0, 3, 3] = y.float() / 10
    return x, y


def true_robust_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """What any attack can at least reach: the explicit step of +eps on the signal pixels."""
    stepped = x.clone()
    stepped[:, 0, :3, :] += EPS
    with torch.no_grad():
        return 100.0 * float((predict_labels(model(stepped), C) == y).float().mean())


@pytest.mark.parametrize("kind", ["merged", "raw"])
def test_the_constructed_model_disagrees_everywhere_and_a_step_breaks_every_image(kind):
    model = Disagreeing(kind)
    x, y = images()
    with torch.no_grad():
        raw = model(x)
        assert (predict_labels(raw, C) == y).all()  # scored correct at the clean image
        view = MergedDummyModel(model)(x) if kind == "merged" else raw
        assert (view.argmax(1) != y).all()  # ... while what the loss sees says "already wrong"
    assert true_robust_accuracy(model, x, y) == 0.0


@pytest.mark.parametrize("kind", ["merged", "raw"])
@pytest.mark.parametrize("protocol", ["published", "adaptive", "adaptive_max"])
def test_every_attack_under_every_protocol_finds_the_truth(kind, protocol):
    model = Disagreeing(kind)
    x, y = images()
    truth = true_robust_accuracy(model, x, y)
    attacks = ["clean", "pgd10", "cw", "fgsm", "apgd(n_iter=10)", "apgd_dlr", "aa(n_iter=10,n_restarts=1)",
               "square(n_queries=300)"]
    res = evaluate(model, x, y, attacks=attacks, protocol=protocol, batch_size=8)
    assert res.accuracy["clean"] == 100.0
    for attack in attacks[1:]:
        assert res.accuracy[attack] == truth, (attack, protocol, res.accuracy)
    # AutoAttack's own bookkeeping under the protocol's raw argmax is recorded beside the scored number.
    assert 0.0 <= res.details["aa(n_iter=10,n_restarts=1)"]["raw_argmax_accuracy"] <= 100.0


def test_the_worst_case_headline_and_each_protocol_column_agree_with_the_truth():
    model = Disagreeing("merged")
    x, y = images()
    res = evaluate(model, x, y, attacks=["clean", "aa(n_iter=10,n_restarts=1)"], batch_size=8)
    assert res.protocol == "worst_case" and set(res.protocols) == {"published", "adaptive", "adaptive_max"}
    for name, by in res.protocols.items():
        assert by.accuracy["aa(n_iter=10,n_restarts=1)"] == 0.0, name
    assert res.robust_accuracy == 0.0


def test_the_lift_is_the_smallest_change_and_leaves_agreeing_rows_and_gradients_alone():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 1.0, 0.0]], requires_grad=True)
    scored = torch.tensor([2, 0])  # row 0 disagrees (argmax 1), row 1 agrees
    lifted = lift_to_scored(logits, scored)
    assert lifted.argmax(1).tolist() == [2, 0]
    assert lifted[0, 2].item() == torch.nextafter(torch.tensor(3.0), torch.tensor(float("inf"))).item()
    assert torch.equal(lifted[1], logits[1].detach()) and torch.equal(lifted[0, :2], logits[0, :2].detach())
    weights = torch.randn(2, 3)
    (lifted * weights).sum().backward()
    assert torch.equal(logits.grad, weights)  # the lift is a constant: the gradient is the logits' own


def test_scored_view_argmax_is_the_projected_prediction_under_each_protocol():
    model = Disagreeing("merged")
    x, y = images()
    x = x + 0.02 * torch.rand_like(x)  # off the clean point too
    with torch.no_grad():
        projected = predict_labels(model(x), C)
        for protocol in ("published", "adaptive", "adaptive_max"):
            assert torch.equal(ScoredView(model, C, protocol)(x).argmax(1), projected)


def test_a_plain_model_has_no_view_and_equals_official_autoattack_image_by_image():
    """On a plain C-output model the scored prediction is the argmax: AutoAttack through the door gives the
    official pyautoattack images, one by one."""
    from pyautoattack import AutoAttack

    from helpers import TinyConvNet, fit_blobs, make_blobs

    torch.manual_seed(0)
    net = fit_blobs(TinyConvNet())
    x, y = make_blobs(24, seed=1)
    res = evaluate(net, x, y, attacks=["aa(attacks=[apgd-ce,apgd-dlr],n_iter=10,n_restarts=1)"], batch_size=8)
    official = AutoAttack(net, norm="Linf", eps=EPS, version="custom", attacks=["apgd-ce", "apgd-dlr"], seed=0)
    official.verbose = False
    for attack in (official.apgd, official.apgd_targeted):
        attack.n_iter = attack.n_iter_orig = 10
        attack.n_restarts, attack.n_iter_2, attack.n_iter_min, attack.size_decr = 1, 2, 1, 1
    with torch.no_grad():
        x_official = official.run_standard_evaluation(x, y, batch_size=8)[0]
        official_correct = net(x_official).argmax(1) == y
    assert torch.equal(res.per_sample["aa(attacks=[apgd-ce,apgd-dlr],n_iter=10,n_restarts=1)"], official_correct)

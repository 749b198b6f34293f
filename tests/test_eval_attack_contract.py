"""One contract over every registered evaluation attack (the timm habit): a new file in
atkit/evaluation/attacks/ is held to it without editing this test.

Each attack, at its ``smoke_settings``: stays inside the threat ball and [0, 1] (L-inf and L2); never raises
accuracy above clean; its per-image flags add up to its accuracy; restores the model's train/eval mode and
``requires_grad`` flags; gets a column and a heading in the results tables; names its source and describes its
budget; and runs under each DUCAT protocol on a dummy-class model.
"""
from __future__ import annotations

import pytest
import torch

from atkit.evaluation import EVAL_ATTACKS, EvalSetup, evaluate, parse_attacks
from atkit.evaluation.target import AttackTarget, build_targets
from atkit.models import build_model
from atkit.workbench.results import ACCURACY_METRICS, column_name
from helpers import TinyConvNet, fit_blobs, make_blobs, REPO, doc_block

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = sorted(EVAL_ATTACKS)


@pytest.fixture(scope="module")
def blobs():
    torch.manual_seed(0)
    return fit_blobs(TinyConvNet()), *make_blobs(32, seed=5)


def _attack(name: str):
    cls = EVAL_ATTACKS[name]
    return cls(**cls.smoke_settings)


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("name", NAMES)
def test_adversarial_images_stay_in_the_ball_and_in_the_image_range(blobs, name, norm, eps):
    net, x, y = blobs
    attack = _attack(name)
    setup = EvalSetup.resolve(threat={"norm": norm, "eps": eps})
    loss_model, scored = build_targets(net, None, 4)
    target = AttackTarget(model=loss_model, scored=scored, threat=setup.threat, num_classes=4,
                          device=torch.device("cpu"), batch_size=16, seed=0)
    torch.manual_seed(0)
    x_adv = attack.run_whole(target, x, y).x_adv if attack.whole_set else attack.perturb(target, x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), (name, float(size.max()))


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_flags_mode_and_tables(blobs, name):
    net, x, y = blobs
    attack = _attack(name)
    label = attack.label()
    net.train()
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    specs = ["clean"] + ([] if name == "clean" else [{"name": name, **attack.smoke_settings}])
    res = evaluate(net, x, y, attacks=specs, batch_size=16)
    assert net.training and {n: p.requires_grad for n, p in net.named_parameters()} == flags  # restored
    net.eval()
    correct = res.per_sample[label]
    assert correct.dtype == torch.bool and correct.shape == (len(y),)
    assert res.accuracy[label] == 100.0 * int(correct.sum()) / len(y)
    assert res.to_dict()["n_correct"][label] == int(correct.sum())
    if attack.adversarial:  # never above clean, image by image
        assert not (correct & ~res.per_sample["clean"]).any()
    assert res.details[label]["passes"]["forward"] >= 0 and "seconds" in res.details[label]
    assert (label in res.robust_attacks) == attack.robust
    # A column and a heading in the results tables, from the registry alone.
    default = EVAL_ATTACKS[name]()
    assert default.label() in ACCURACY_METRICS or (default.suffix_required and f"{name}20" in ACCURACY_METRICS)
    assert column_name(label) == attack.short_name() and attack.display_name()
    info = type(attack).describe_class()
    assert info["paper"] and info["doc"] and set(info["settings"]) == set(attack.settings())


@pytest.mark.parametrize("name", NAMES)
def test_runs_under_every_protocol_on_a_dummy_class_model(name):
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, dummy_classes=True, width=4).eval()  # APGD-T needs 4 outputs per view
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 1, 2])
    attack = _attack(name)
    specs = ["clean"] + ([] if name == "clean" else [{"name": name, **attack.smoke_settings}])
    res = evaluate(model, x, y, attacks=specs, batch_size=6)
    assert set(res.protocols) == {"published", "adaptive", "adaptive_max"}
    label = attack.label()
    for protocol, by in res.protocols.items():
        assert 0.0 <= by.accuracy[label] <= 100.0 and "raw_argmax_accuracy" in by.details[label], protocol
    worst = res.per_sample[label]
    for by in res.protocols.values():
        assert not (worst & ~by.per_sample[label]).any()  # the headline is the per-image worst case


def test_an_unknown_attack_is_refused_before_any_work():
    with pytest.raises(Exception, match="unknown evaluation attack 'pgd_twenty'"):
        parse_attacks(["clean", "pgd_twenty"])


def test_the_guides_attack_example_is_the_shipped_apgd_dlr_file_and_it_is_strong():
    """docs/extending.md's evaluation-attack block is atkit/evaluation/attacks/apgd_dlr.py as shipped, and the
    attack breaks a model whose softmax is saturated (a CE attack sees no gradient; DLR is scale-invariant)."""
    shipped = (REPO / "atkit" / "evaluation" / "attacks" / "apgd_dlr.py").read_text().strip()
    assert doc_block("docs/extending.md", "adding-an-attack") == "# atkit/evaluation/attacks/apgd_dlr.py\n" + shipped

    class Saturated(torch.nn.Module):  # logits x 1e4: the CE gradient underflows to zero in float32
        def __init__(self, net):
            super().__init__()
            self.net, self.num_classes = net, net.num_classes

        def forward(self, x):
            return 1e4 * self.net(x)

    torch.manual_seed(0)
    net = fit_blobs(TinyConvNet())
    x, y = make_blobs(64, seed=3)
    res = evaluate(Saturated(net), x, y, attacks=["clean", "pgd20", "apgd_dlr(n_iter=20)"], batch_size=64)
    plain = evaluate(net, x, y, attacks=["apgd_dlr(n_iter=20)"], batch_size=64)
    assert res.accuracy["pgd20"] > res.accuracy["apgd_dlr(n_iter=20)"] + 20  # CE-PGD is stuck, DLR is not
    assert abs(res.accuracy["apgd_dlr(n_iter=20)"] - plain.accuracy["apgd_dlr(n_iter=20)"]) <= 10


def test_autoattack_driver_runs_under_no_grad_as_the_official_driver_does():
    """Forwards on inputs that need no gradient (the driver's clean checks and bookkeeping) build no autograd graph:
    atkit's AutoAttack driver runs under ``torch.no_grad()`` like pyautoattack's own, and the attacks enable gradients
    where they need them (without it, a CPU evaluation held about 330 MB more at its peak)."""
    seen: list[tuple[bool, bool]] = []

    class Recording(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((x.requires_grad, torch.is_grad_enabled()))
            return self.net(x)

    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    evaluate(Recording(), x, y, attacks=["aa(attacks=[apgd-ce], n_iter=5)"])
    plain = [grad_on for needs_grad, grad_on in seen if not needs_grad]
    assert plain and not any(plain), f"{sum(plain)} of {len(plain)} forwards on plain inputs built a graph"
    assert any(needs_grad and grad_on for needs_grad, grad_on in seen)  # the attack itself still has its gradients

"""Sanity checks that would catch a broken defense: the evaluation is checked, not only the model.

A robust accuracy is only as good as the attack behind it. Gradient masking (obfuscated gradients,
Athalye, Carlini & Wagner, ICML 2018) makes gradient attacks fail while the model is not robust;
the checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness", section 5) and the
flags of the official AutoAttack code (Croce & Hein, ICML 2020, ``pyautoattack.checks``) name the
symptoms. Each check here returns a JSON-ready dict ``{name, passed, detail, values}``:

``monotone_steps``  accuracy must not rise with more attack steps (FGSM, PGD-10/20/50), and the
                    strongest of them must bring it below clean (flat is not monotone, it is stuck);
``monotone_eps``    accuracy must not rise with a larger eps (eps x 0.5, 1, 2, 4), and at the largest
                    eps it must be clearly below clean (by ``min_drop`` of the clean accuracy);
``large_eps``       an (almost) unbounded PGD from the clean point (L-inf eps 0.5: every image can
                    reach the same grey image) must bring accuracy to ~0;
``black_box``       Square (gradient-free, the official AutoAttack implementation) on a subset must
                    not beat the white-box attacks on the same samples, a margin-loss attack (CW or
                    APGD-DLR) among them; Square beating only the CE attacks is noted ("CE attacks
                    are weak here"), not flagged as masking;
``zero_gradients``  no sample may have an all-zero input gradient of the CE loss (AutoAttack's
                    ``check_zero_gradients``);
``randomness``      identical forward passes must agree (AutoAttack's ``check_randomized``);
``dummy_protocol``  for dummy-class models (DUCAT): accuracy under the published protocol must not
                    exceed the adaptive ones (attacks on the merged logits) by more than the
                    tolerance, compared on the strongest attack that ran
                    (AA, APGD or CW; CW is run for the check when none of them was).

Tolerances are in samples, to absorb the noise of random starts: by default
``max(2, ceil(1% of n))`` samples of the ``n`` checked, stated in each check's ``detail``.

Every attack a check makes goes through :func:`atkit.evaluation.runner.run_attacks`, the loop under
:func:`atkit.evaluation.evaluate`, with the evaluation's :class:`atkit.evaluation.setup.EvalSetup`: the same
scoring (by the prediction that is scored, a dummy-class model's scored view included), seeds, device and
batching as the numbers they check.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...attacks.mode import attack_mode
from ...core.progress import Phases
from ...core.utils import ConfigError
from ..attack import is_margin_attack, parse_attacks
from ..runner import AttackRun, run_attacks
from ..setup import EvalSetup
from ..target import build_targets

# Attacks whose result may enter the white-box reference of the black-box check ("aa" and "square" contain Square).
_NOT_WHITE_BOX = ("clean", "random", "aa", "square")
# Share of the clean accuracy the largest eps of monotone_eps must at least remove.
DEFAULT_MIN_DROP = 0.1


def _run(model: nn.Module, x: Tensor, y: Tensor, names: Sequence[str], setup: EvalSetup, protocol: Optional[str],
         phases: Optional[Phases]) -> AttackRun:
    return run_attacks(model, x, y, parse_attacks(list(names)), setup, protocol=protocol, phases=phases)


class _Collector:
    """Logger stand-in for ``pyautoattack.checks``: keeps the warnings instead of printing them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, msg: str) -> None:
        self.messages.append(str(msg))

    info = debug = warning


def default_tolerance(n: int) -> int:
    """Samples of slack for comparisons between attacks: ``max(2, ceil(0.01 n))``."""
    return max(2, math.ceil(0.01 * n))


def _check(name: str, passed: bool, detail: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail, "values": values}


def _pct(k: int, n: int) -> float:
    return 100.0 * k / n


def _monotone(names: Sequence[str], accs: Sequence[float], tol_pct: float) -> list[str]:
    """Violations of "accuracy does not rise along ``names``" (each compared with the lowest before it)."""
    violations = []
    lowest, lowest_name = math.inf, None
    for name, acc in zip(names, accs):
        if acc > lowest + tol_pct:
            violations.append(f"{name} {acc:.1f}% > {lowest_name} {lowest:.1f}%")
        if acc < lowest:
            lowest, lowest_name = acc, name
    return violations


def _fmt(names: Sequence[str], accs: Sequence[float]) -> str:
    return ", ".join(f"{n} {a:.1f}%" for n, a in zip(names, accs))


# ---------------------------------------------------------------------------------------- checks
def check_monotone_steps(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *,
                         attacks: Sequence[str] = ("fgsm", "pgd10", "pgd20", "pgd50"), protocol: Optional[str] = None,
                         tolerance_samples: Optional[int] = None, phases: Optional[Phases] = None) -> dict[str, Any]:
    """Accuracy under ``attacks`` (ordered weakest to strongest) must be non-increasing within the
    tolerance, and the lowest of them must lie below clean by more than the tolerance.

    More iterations of a gradient attack can only help it when gradients are informative (Carlini
    et al. 2019, section 5.2); a rise points to masked or noisy gradients, and an accuracy that never
    leaves clean to an attack that cannot move (a flat profile passes "non-increasing" trivially).
    A model already at (about) zero clean accuracy has nothing to drop and passes that part.
    ``per_sample`` of each attack is returned in ``values`` under ``"_per_sample"`` for the
    black-box check (not JSON).
    """
    n = x.shape[0]
    tol = default_tolerance(n) if tolerance_samples is None else tolerance_samples
    names = ["clean", *[a for a in attacks if a != "clean"]]
    res = _run(model, x, y, names, setup, protocol, phases)
    accs = [res.accuracy[a] for a in attacks]
    clean = res.accuracy["clean"]
    bad = _monotone(attacks, accs, _pct(tol, n))
    drop = clean - min(accs)
    flat = clean > _pct(tol, n) and drop <= _pct(tol, n)
    detail = (f"clean {clean:.1f}%, {_fmt(attacks, accs)}; must not rise with more steps and must drop below "
              f"clean (tolerance {tol} of {n} samples)")
    if flat:
        detail = (f"accuracy does not drop under attack ({drop:.1f} points below clean): the attack cannot move "
                  "the model (masked gradients). " + detail)
    if bad:
        detail = "accuracy rises with more steps: " + "; ".join(bad) + ". " + detail
    out = _check("monotone_steps", not bad and not flat, detail, accuracy=dict(zip(attacks, accs)), clean=clean,
                 drop=drop, n=n, tolerance_samples=tol)
    out["_per_sample"] = res.per_sample
    return out


def check_monotone_eps(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, steps: int = 20,
                       factors: Sequence[float] = (0.5, 1.0, 2.0, 4.0), protocol: Optional[str] = None,
                       tolerance_samples: Optional[int] = None, min_drop: float = DEFAULT_MIN_DROP,
                       phases: Optional[Phases] = None) -> dict[str, Any]:
    """PGD-``steps`` accuracy at eps and step size scaled by each of ``factors`` must not rise with eps,
    and at the largest factor it must be clearly below clean: at most
    ``clean - max(tolerance, min_drop * clean)`` percent.

    A larger ball contains the smaller one, so a working attack can only do better (Carlini et al.
    2019, section 5.2; Athalye et al. 2018, section 3); an accuracy that stays flat up to 4 eps means
    the attack does not move the model, not that the model is robust. A model at (about) zero clean
    accuracy has nothing to drop and passes that part.
    """
    thr = setup.threat
    n = x.shape[0]
    tol = default_tolerance(n) if tolerance_samples is None else tolerance_samples
    factors = sorted(float(f) for f in factors)
    if not (isinstance(min_drop, (int, float)) and 0 <= min_drop <= 1):
        raise ConfigError(f"min_drop={min_drop!r} must be a fraction of the clean accuracy in [0, 1].")
    names, accs, per_sample = [], [], {}
    clean = None
    for f in factors:
        scaled = {"norm": thr["norm"], "eps": thr["eps"] * f, "step_size": thr["step_size"] * f}
        res = _run(model, x, y, (["clean"] if clean is None else []) + [f"pgd{steps}"],
                   setup.replace(threat=scaled), protocol, phases)
        clean = res.accuracy.get("clean", clean)
        names.append(f"eps x{f:g}")
        accs.append(res.accuracy[f"pgd{steps}"])
        per_sample[f] = res.per_sample[f"pgd{steps}"]
    bad = _monotone(names, accs, _pct(tol, n))
    required = max(_pct(tol, n), min_drop * clean)
    drop = clean - accs[-1]
    flat = clean > _pct(tol, n) and drop < required
    detail = (f"PGD-{steps}: clean {clean:.1f}%, {_fmt(names, accs)} (eps {thr['eps']:.4g}); must not rise with eps "
              f"and must be at least {required:.1f} points below clean at {names[-1]} (tolerance {tol} of {n} samples)")
    if flat:
        detail = (f"accuracy barely drops with eps ({drop:.1f} points below clean at {names[-1]}): the attack does not "
                  "move the model (masked gradients). " + detail)
    if bad:
        detail = "accuracy rises with eps: " + "; ".join(bad) + ". " + detail
    out = _check("monotone_eps", not bad and not flat, detail, eps=[thr["eps"] * f for f in factors], factors=factors,
                 accuracy=accs, clean=clean, drop=drop, required_drop=required, n=n, tolerance_samples=tol)
    if 1.0 in per_sample:
        out["_per_sample"] = {f"pgd{steps}": per_sample[1.0]}
    return out


def check_large_eps(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, eps: Optional[float] = None,
                    steps: int = 50, max_accuracy: float = 5.0, protocol: Optional[str] = None,
                    tolerance_samples: Optional[int] = None, phases: Optional[Phases] = None) -> dict[str, Any]:
    """PGD-``steps`` with a huge budget, started at the clean point, must drive accuracy to ~0.

    With L-inf eps 0.5 every image in [0, 1] can reach the same grey image, so no classifier can
    stay correct on all classes: an attack that leaves accuracy high is not following the loss
    (Athalye et al. 2018, section 3; Carlini et al. 2019, section 5.2: "unbounded attacks must reach
    100% success"). The start is the clean point (no random start) so that noise alone cannot pass
    the check; step size ``2.5 eps / steps`` (Madry et al. 2018). L2: ``eps = min(0.5 sqrt(d), 64)``.
    Passes when accuracy <= ``max(max_accuracy, tolerance)`` percent.
    """
    thr = setup.threat
    n = x.shape[0]
    tol = default_tolerance(n) if tolerance_samples is None else tolerance_samples
    if eps is None:
        eps = 0.5 if thr["norm"] == "linf" else min(0.5 * math.sqrt(x[0].numel()), 64.0)
    step_size = 2.5 * eps / steps
    big = setup.replace(threat={"norm": thr["norm"], "eps": eps, "step_size": step_size})
    name = f"pgd{steps}(random_start=none)"
    res = _run(model, x, y, [name], big, protocol, phases)
    acc = res.accuracy[name]
    limit = max(max_accuracy, _pct(tol, n))
    passed = acc <= limit
    detail = (f"PGD-{steps} from the clean point at {thr['norm']} eps {eps:.4g} (step {step_size:.4g}): "
              f"accuracy {acc:.1f}%, must be <= {limit:.1f}%")
    if not passed:
        detail = "an almost unbounded attack fails: " + detail
    return _check("large_eps", passed, detail, eps=eps, steps=steps, accuracy=acc, limit=limit, n=n)


def check_black_box(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, n_queries: int = 300,
                    white_box: Optional[Mapping[str, Tensor]] = None, protocol: Optional[str] = None,
                    tolerance_samples: Optional[int] = None, margin_attack: str = "cw",
                    phases: Optional[Phases] = None) -> dict[str, Any]:
    """Square (official ``pyautoattack`` implementation, ``n_queries`` queries) must not beat white-box.

    ``white_box``: name -> bool ``(n,)`` per-sample correctness of white-box attacks on the same
    samples; their per-sample AND (a sample counts as robust only if every one failed) is the
    reference. Without a margin-loss attack among them (``cw``/``cwN``, ``apgd`` = APGD-CE + APGD-DLR),
    ``margin_attack`` is run and added: Square optimises a margin, and a cross-entropy PGD can lose to
    it on a model whose gradients are fine. Fails when Square's accuracy is below the reference by
    more than the tolerance: a gradient-free attack beating the gradient attacks, the margin attack
    included, means the gradients mislead (Athalye et al. 2018; AutoAttack's ``check_square_sr``).
    When Square beats only the CE attacks, the check passes with the note "CE attacks are weak here"
    (``values["ce_attacks_weak"]``). Square, like every attack, decides success by the scored prediction.
    """
    n = x.shape[0]
    tol = default_tolerance(n) if tolerance_samples is None else tolerance_samples
    if not white_box:
        raise ConfigError("check_black_box needs white_box={attack name: per-sample correctness} on the same samples")
    if not is_margin_attack(margin_attack):
        raise ConfigError(f"margin_attack={margin_attack!r} must be a margin-loss attack: cw, cwN or apgd.")
    white_box = dict(white_box)
    if not any(is_margin_attack(name) for name in white_box):
        white_box[margin_attack] = _run(model, x, y, [margin_attack], setup, protocol, phases).per_sample[margin_attack]
    name = f"square(n_queries={n_queries})"
    square = _run(model, x, y, [name], setup, protocol, phases).per_sample[name]

    def worst(names: Sequence[str]) -> Optional[float]:
        if not names:
            return None
        flags = torch.ones(n, dtype=torch.bool)
        for name in names:
            flags &= white_box[name].to("cpu", torch.bool)
        return _pct(int(flags.sum()), n)

    margin_names = sorted(name for name in white_box if is_margin_attack(name))
    ce_names = sorted(name for name in white_box if not is_margin_attack(name))
    wb = torch.ones(n, dtype=torch.bool)
    for flags in white_box.values():
        wb &= flags.to("cpu", torch.bool)
    acc_square, acc_wb = _pct(int(square.sum()), n), _pct(int(wb.sum()), n)
    acc_margin, acc_ce = worst(margin_names), worst(ce_names)
    only_square = int((wb & ~square).sum())
    passed = acc_square >= acc_wb - _pct(tol, n)
    ce_weak = passed and acc_ce is not None and acc_square < acc_ce - _pct(tol, n)
    detail = (f"Square ({n_queries} queries) {acc_square:.1f}% vs white-box {acc_wb:.1f}% "
              f"({', '.join(sorted(white_box))}, per-sample worst case; margin-loss {', '.join(margin_names)} "
              f"{acc_margin:.1f}%) on {n} samples; {only_square} broken only by Square (tolerance {tol} samples)")
    if not passed:
        detail = ("the black-box attack beats the white-box attacks, the margin-loss attack included: gradients "
                  "are masked. " + detail)
    elif ce_weak:
        detail = (f"CE attacks are weak here: Square beats the CE attacks ({', '.join(ce_names)} {acc_ce:.1f}%) but "
                  "not the margin-loss attack, so the gradients are fine; report a margin-loss attack (CW, AA), not "
                  "CE-PGD alone. " + detail)
    return _check("black_box", passed, detail, square_accuracy=acc_square, white_box_accuracy=acc_wb,
                  margin_accuracy=acc_margin, ce_accuracy=acc_ce, ce_attacks_weak=bool(ce_weak),
                  broken_only_by_square=only_square, n_queries=n_queries, white_box_attacks=sorted(white_box),
                  margin_attacks=margin_names, n=n, tolerance_samples=tol)


def _loss_model(model: nn.Module, x: Tensor, setup: EvalSetup, protocol: Optional[str]) -> nn.Module:
    """What the attacks' losses see under ``protocol`` (:func:`atkit.evaluation.target.build_targets`)."""
    num_classes = setup.num_classes or getattr(model, "num_classes", None)
    if num_classes is None:
        with torch.no_grad():
            num_classes = model(x[:1].to(setup.resolved_device(model), torch.float32)).shape[1]
    return build_targets(model, protocol, int(num_classes))[0]


def check_zero_gradients(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, protocol: Optional[str] = None,
                         max_fraction: float = 0.0) -> dict[str, Any]:
    """Fraction of samples whose CE-loss input gradient is all zero must be <= ``max_fraction`` (0).

    AutoAttack's criterion (``pyautoattack.checks.check_zero_gradients``: ``sum |grad| == 0``), whose
    warning is kept in ``values["autoattack"]``. Zero gradients (non-differentiable input
    transforms, saturated softmax outputs) stop every gradient attack at its start point.
    """
    from pyautoattack import checks  # why: pyautoattack is heavy; only this check needs it

    n, batch_size = x.shape[0], setup.batch_size
    dev = setup.resolved_device(model)
    attack_model = _loss_model(model, x, setup, protocol)
    y_cpu = y.detach().to("cpu", torch.long)
    zero = torch.zeros(n, dtype=torch.bool)
    collector = _Collector()
    no_path = False
    with attack_mode(model, "eval"), attack_mode(attack_model, "eval"):
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(dev, torch.float32).requires_grad_(True)
            yb = y_cpu[start:start + batch_size].to(dev)
            with torch.enable_grad():
                loss = F.cross_entropy(attack_model(xb), yb, reduction="sum")
                if loss.requires_grad:
                    (grad,) = torch.autograd.grad(loss, xb, allow_unused=True)
                else:
                    grad = None
            if grad is None:  # the output does not depend differentiably on the input at all
                grad, no_path = torch.zeros_like(xb), True
            checks.check_zero_gradients(grad.detach(), logger=collector)
            zero[start:start + xb.shape[0]] = (grad.detach().flatten(1).abs().sum(1) == 0).cpu()
    k = int(zero.sum())
    frac = k / n
    passed = frac <= max_fraction
    detail = (f"{k} of {n} samples ({100 * frac:.1f}%) have an all-zero input gradient of the CE loss "
              f"(allowed {100 * max_fraction:.1f}%)")
    if no_path:
        detail += "; the output does not depend differentiably on the input"
    if not passed:
        detail = "gradient attacks cannot move these samples (masked gradients): " + detail
    return _check("zero_gradients", passed, detail, n_zero=k, fraction=frac, n=n, autoattack=collector.messages)


def check_randomness(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, passes: int = 5,
                     protocol: Optional[str] = None) -> dict[str, Any]:
    """Identical forward passes (eval mode) must give the same output: AutoAttack's ``check_randomized``.

    A randomized model needs an attack that averages over the randomness (EOT, Athalye et al. 2018,
    section 4.2); AutoAttack's ``version="rand"``. The caller's RNG state is left untouched.
    """
    from pyautoattack import checks  # why: pyautoattack is heavy; only this check needs it

    dev, batch_size, seed = setup.resolved_device(model), setup.batch_size, setup.seed
    attack_model = _loss_model(model, x, setup, protocol)
    xb = x[:batch_size].to(dev, torch.float32)
    yb = y[:batch_size].to(dev, torch.long)
    collector = _Collector()
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with attack_mode(model, "eval"), attack_mode(attack_model, "eval"), torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        checks.check_randomized(attack_model, xb, yb, bs=batch_size, n=passes, logger=collector)
        with torch.no_grad():
            first = attack_model(xb)
            max_diff = max(float((attack_model(xb) - first).abs().max()) for _ in range(passes - 1))
    passed = not collector.messages
    detail = (f"{passes} identical forward passes on {xb.shape[0]} samples differ by at most {max_diff:.3g} "
              "in the logits")
    if not passed:
        detail = "the model's output is random (attack it with EOT / AutoAttack version='rand'): " + detail
    return _check("randomness", passed, detail, max_abs_diff=max_diff, passes=passes, n=int(xb.shape[0]),
                  autoattack=collector.messages)


def check_dummy_protocol(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, attack: str = "cw",
                         tolerance_samples: Optional[int] = None, results: Optional[Mapping[str, Any]] = None,
                         phases: Optional[Phases] = None) -> dict[str, Any]:
    """Dummy-class models: robust accuracy under the published protocol (attacks on the raw 2C logits)
    must not exceed the adaptive ones (attacks on the merged C logits, logsumexp and, when run, max)
    by more than the tolerance; otherwise "the published protocol overstates robustness" (DUCAT's
    evaluation protocols). Compare a strong attack (AA, APGD, CW): dummy classes barely move CE-PGD,
    so a PGD-20 comparison can pass with a large AutoAttack inflation.

    ``results``: protocol -> result already computed on the same images (an :class:`atkit.evaluation.EvalResult`
    or :class:`atkit.evaluation.runner.AttackRun`) that contain ``attack``; then nothing is re-run. Otherwise the
    published and the logsumexp protocol are evaluated on ``x`` here.
    """
    if results is not None and all(p in results and attack in results[p].accuracy for p in ("published", "adaptive")):
        out = {p: r for p, r in results.items() if p in ("published", "adaptive", "adaptive_max")}
    else:
        out = {p: _run(model, x, y, [attack], setup, p, phases) for p in ("published", "adaptive")}
    n = out["published"].n
    tol = default_tolerance(n) if tolerance_samples is None else tolerance_samples
    pub = out["published"].accuracy[attack]
    adaptive = {p: r.accuracy[attack] for p, r in out.items() if p != "published" and attack in r.accuracy}
    lowest = min(adaptive.values())
    passed = pub - lowest <= _pct(tol, n)
    shown = ", ".join(f"{p} {a:.1f}%" for p, a in adaptive.items())
    detail = (f"{attack}: published {pub:.1f}% vs {shown} (gap {pub - lowest:.1f} points, tolerance "
              f"{tol} of {n} samples)")
    if not passed:
        detail = "the published protocol overstates robustness: " + detail
    return _check("dummy_protocol", passed, detail, attack=attack, published=pub, adaptive=adaptive["adaptive"],
                  adaptive_max=adaptive.get("adaptive_max"), gap=pub - lowest, n=n, tolerance_samples=tol)

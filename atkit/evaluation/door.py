"""The one door into evaluation: :func:`evaluate`.

Every number atkit reports comes through here (the trainer's per-epoch check and final report, ``atkit eval``,
the notebooks, the experiments): one setup resolved once (:class:`atkit.evaluation.setup.EvalSetup`), the
attacks read by one grammar (:func:`atkit.evaluation.attack.parse_attacks`) before any work, run by one loop
(:func:`atkit.evaluation.runner.run_attacks`) that scores every attack by the prediction that is scored, the
sanity checks beside the robust numbers, a warning when the model is at chance level or its outputs are not
finite, and a provenance record of what produced the numbers.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..attacks.mode import attack_mode
from ..core.fast import eval_model, precision_scope
from ..core.progress import Phases, as_phases
from ..core.provenance import build_provenance
from ..core.stats import wilson_interval
from ..core.utils import ConfigError
from . import sanity as sanity_module  # by module (late binding): `sanity` is evaluate's argument name
from .attack import parse_attacks
from .result import EvalResult, worst_case_over_protocols
from .runner import AttackRun, run_attacks
from .setup import EvalSetup


def resolve_eval_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on a CUDA device, else ``"fp32"``; the others as given."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


@contextlib.contextmanager
def precision_context(model: nn.Module, precision: str, device: torch.device,
                      varying_shapes: bool = False) -> Iterator[nn.Module]:
    """The model the attacks see under ``precision`` and the matching TF32 setting: exact fp32 (TF32 off), fp32
    with TF32 on (CUDA matmuls and convolutions), or a bf16 autocast view (:func:`atkit.core.fast.eval_model`).
    With ``varying_shapes`` (whole-set attacks: AutoAttack's batches shrink as images break) cuDNN's autotuning is
    off inside, since tuning every new shape again costs more than it saves; otherwise it is left as it is."""
    benchmark = torch.backends.cudnn.benchmark
    if varying_shapes:
        torch.backends.cudnn.benchmark = False
    try:
        with _precision(model, precision, device) as view:
            yield view
    finally:
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def _precision(model: nn.Module, precision: str, device: torch.device) -> Iterator[nn.Module]:
    with precision_scope(precision, device):  # TF32 on for tf32, off for exact fp32 (atkit.core.fast)
        yield eval_model(model, device=device, precision="bf16") if precision == "bf16" else model


def chance_note(result: EvalResult) -> Optional[str]:
    """A warning when the clean accuracy is not above chance (1/C): the upper end of its 95 % Wilson interval
    does not clear ``100/C + 2`` points, so robust numbers of the model say nothing about robustness."""
    flags = result.per_sample.get("clean")
    if flags is None or not result.num_classes:
        return None
    k, n = int(flags.sum()), result.n
    chance = 100.0 / result.num_classes
    low, high = (100.0 * v for v in wilson_interval(k, n))
    if high <= chance + 2.0:
        return (f"clean accuracy {100.0 * k / n:.2f}% [{low:.2f}, {high:.2f}] on n={n} is at chance level "
                f"(1/{result.num_classes} = {chance:.1f}%): the model has not learned, and its robust accuracies say "
                "nothing about robustness")
    return None


def plan_note(model: nn.Module, x: Tensor, y: Tensor, specs: Mapping[str, Any], setup: EvalSetup,
              protocols: int) -> Optional[str]:
    """What the evaluation will cost, said before it starts when it is long: per attack its passes per image
    (AutoAttack standard: a robust ResNet-18's), and the time one forward-backward pass takes here, measured on one
    batch. None when the attacks are cheap (under a minute by that measure)."""
    costs = {label: a.passes_per_image() for label, a in specs.items()}
    costs = {label: c for label, c in costs.items() if c is not None}
    if not costs:
        return None
    n = int(x.shape[0])
    xb = x[:min(setup.batch_size, n)].to(setup.resolved_device(model), torch.float32).requires_grad_(True)
    began = time.time()
    with attack_mode(model, "eval"), torch.enable_grad():  # eval mode, frozen weights: nothing of the model changes
        torch.autograd.grad(model(xb).sum(), xb)
    per_image_pass = (time.time() - began) / xb.shape[0]  # one forward and one backward pass
    seconds = sum(f + b for f, b in costs.values()) / 2 * per_image_pass * n * protocols
    if seconds < 60:
        return None
    parts = ", ".join(f"{label} ~{f:,} forward + {b:,} backward per image" for label, (f, b) in costs.items())
    hours = seconds / 3600
    return (f"plan: {n} images x {protocols} protocol(s); {parts}; one forward+backward pass takes "
            f"{1000 * per_image_pass:.2f} ms per image here, so about {hours:.1f} h in all (AutoAttack's figure is a "
            "robust model's; images broken early cost less). A RobustBench card needs the full test set.")


def _result(run: AttackRun, precision: str) -> EvalResult:
    return EvalResult(accuracy=run.accuracy, per_sample=run.per_sample, n=run.n, threat=dict(run.setup.threat),
                      protocol=run.protocol, num_classes=run.num_classes, seed=run.setup.seed, details=run.details,
                      attack_warnings=run.attack_warnings, precision=precision)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attacks: Sequence[Any] = ("clean", "pgd20"),
    threat: Any = None,
    protocol: Any = None,
    precision: str = "fp32",
    batch_size: int = 500,
    device: Optional[str | torch.device] = None,
    num_classes: Optional[int] = None,
    seed: int = 0,
    sanity: bool | Mapping[str, Any] = False,
    progress: bool | Phases = False,
    aa_state_dir: Optional[Any] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    setup: Optional[EvalSetup] = None,
) -> EvalResult:
    """Accuracy (percent) of ``model`` on images ``x`` in [0, 1] with labels ``y`` under each of ``attacks``.

    ``attacks``: names read by :func:`atkit.evaluation.attack.parse_attack` (``clean``, ``pgd20``, ``cw``,
    ``apgd``, ``aa``, ``aa(n_iter=20)``, ...), checked before any work. ``threat``: None (L-inf, eps 8/255, step
    2/255), a mapping or an object with ``norm``, ``eps``, ``step_size``. Every accuracy is by
    :func:`atkit.models.predict_labels` of the model's own logits, and every attack decides success by that
    same prediction (:mod:`atkit.evaluation.target`).

    A dummy-class (DUCAT) model is evaluated under every protocol of ``protocol`` (None: all of
    ``published``, ``adaptive``, ``adaptive_max``; a name or a list: those) and the result is the per-image worst
    case over them (``protocol == "worst_case"``), each protocol's result in ``result.protocols``; with one
    protocol, that protocol's result. A plain model takes no protocol.

    ``precision``: ``"fp32"`` (exact, TF32 off: the reported numbers), ``"tf32"``, ``"bf16"`` (autocast of the
    model's forwards) or ``"auto"``. ``batch_size``, ``device`` (default: the model's), ``num_classes`` (default:
    ``model.num_classes``, else the logit width), ``seed`` (every attack starts from ``torch.manual_seed(seed)``;
    the caller's RNG state, the model's mode and its ``requires_grad`` flags are restored). ``sanity``: also run
    the gradient-masking checks (``True`` or a dict of :func:`atkit.evaluation.sanity.run_sanity_checks` options,
    e.g. ``{"n": 200}``). ``aa_state_dir``: where whole-set attacks (AutoAttack) keep resumable state.
    ``provenance``: extra parts for the provenance record (``images``, ``checkpoint``, ``model``). ``setup``: an
    :class:`EvalSetup` instead of the keywords above. ``progress``: ``True`` shows each attack (images done,
    ETA, passes inside AutoAttack's sub-attacks) and each check; an :class:`atkit.core.progress.Phases` labels them.
    """
    specs = parse_attacks(list(attacks) if not isinstance(attacks, (str, Mapping)) else [attacks])
    if setup is None:
        setup = EvalSetup.resolve(threat=threat, protocol=protocol, precision=precision, batch_size=batch_size,
                                  seed=seed, device=device, num_classes=num_classes, state_dir=aa_state_dir)
    dummy = bool(getattr(model, "dummy_classes", False))
    if not dummy and protocol is not None:
        raise ConfigError(f"protocol={protocol!r} is for DUCAT models with dummy classes (2C outputs); this model "
                          "has none: leave protocol out.")
    dev = setup.resolved_device(model)
    used_precision = resolve_eval_precision(setup.precision, dev)
    setup = setup.replace(device=dev, precision=used_precision)
    phases = as_phases(progress, "evaluate")
    protocols: Sequence[Optional[str]] = setup.protocols if dummy else (None,)

    varying = any(a.whole_set for a in specs.values())
    with precision_context(model, used_precision, dev, varying_shapes=varying) as view:
        if phases is not None:
            note = plan_note(view, x, y, specs, setup, len(protocols))
            if note:
                phases.note(note)
        by_protocol = {p: _result(run_attacks(view, x, y, specs, setup, protocol=p, phases=phases), used_precision)
                       for p in protocols}
        if len(by_protocol) > 1:
            result = worst_case_over_protocols(by_protocol)
        else:
            result = next(iter(by_protocol.values()))
        for res in [result, *result.protocols.values()]:
            note = chance_note(res)
            if note:
                res.notes.append(note)
        if phases is not None:
            if result.robust_metric is not None:
                phases.note(f"[{result.protocol or 'model'}] robust {result.robust_accuracy:.2f}% "
                            f"({result.robust_metric}) behind Mean/NRR")
            for warning in result.warnings:
                phases.note(f"warning: {warning}")
        if sanity:
            options = dict(sanity) if isinstance(sanity, Mapping) else {}
            began = time.time()
            reference = (result.protocols.get("published") or result).per_sample
            checks = sanity_module.run_sanity_checks(view, x, y, setup, reference=reference,
                                       protocol_results=result.protocols or None,
                                       protocol=None if not dummy else (protocols[0] if len(protocols) == 1 else None),
                                       progress=phases.child("sanity") if phases is not None else False, **options)
            if phases is not None:
                bad = [c["name"] for c in checks if not c["passed"]]
                phases.note(f"sanity checks {'passed' if not bad else 'FAILED: ' + ', '.join(bad)} "
                            f"({time.time() - began:.1f} s)")
            result.checks = checks
            if "published" in result.protocols:
                result.protocols["published"].checks = checks
    for res in [result, *result.protocols.values()]:
        res.provenance = {**build_provenance(model=view, device=dev, batch_size=setup.batch_size,
                                             threat=setup.threat, seed=setup.seed, details=res.details,
                                             warnings=res.warnings, precision=precision_label(used_precision, dev)),
                          **dict(provenance or {})}
        if res is result and result.protocols:
            res.provenance["worst_case_of"] = list(result.protocols)
    return result


def precision_label(precision: str, device: torch.device) -> str:
    """How provenance names a precision: ``fp32`` (exact), ``fp32+tf32`` (TF32 on a CUDA device), ``bf16``."""
    if precision == "tf32":
        return "fp32+tf32" if device.type == "cuda" else "fp32"
    return precision


__all__ = ["chance_note", "evaluate", "precision_context", "precision_label", "resolve_eval_precision"]

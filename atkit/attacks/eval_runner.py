"""Run named evaluation attacks on a batch of images: the per-sample correctness under each.

:func:`run_eval_attacks` is the attack loop both :func:`atkit.evaluate.evaluate` (which adds the robust
accuracy, Mean/NRR, the sanity checks and provenance) and the sanity checks of :mod:`atkit.sanity` (which compare
accuracies under several attacks and budgets) run on. Names are read by
:func:`atkit.attacks.eval_attacks.parse_eval_attack`, the threat by :func:`atkit.attacks.threat.resolve_threat`,
and a DUCAT protocol's view of the model by :func:`atkit.models.dummy.protocol_model`. Every accuracy is by
:func:`atkit.models.predict_labels` of the model's own logits, so a dummy-class model is scored by its projected
prediction.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..models.dummy import predict_labels, protocol_model
from ..progress import Phases, as_phases
from ..stats import format_accuracy
from ..utils import ConfigError, model_device
from .autoattack import AA_PRESETS, run_autoattack
from .eval_attacks import EvalAttack, eval_attack_names, parse_eval_attack
from .fgsm import fgsm
from .mode import attack_mode
from .pgd import pgd
from .random_noise import random_noise
from .threat import resolve_threat


@dataclass
class AttackRun:
    """Per-sample results of :func:`run_eval_attacks` on ``n`` images.

    ``per_sample``: attack name -> bool ``(n,)`` on the CPU, True where the image is classified correctly under
    that attack; ``accuracy``: name -> percent. ``threat``: the resolved ``{norm, eps, step_size}``;
    ``protocol``: the DUCAT protocol used (None for a plain model); ``details``: per attack, its settings and
    seconds (AutoAttack's per-stage counts); ``attack_warnings``: AutoAttack's own warnings,
    ``"<attack>: <stage>: <message>"``; ``device``: where the attacks ran.
    """

    accuracy: dict[str, float]
    per_sample: dict[str, Tensor]
    n: int
    threat: dict[str, Any]
    protocol: Optional[str]
    num_classes: int
    seed: int
    device: torch.device
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_warnings: list[str] = field(default_factory=list)


def parse_attack_list(attacks: Sequence[str]) -> dict[str, EvalAttack]:
    """``name -> EvalAttack`` for a list of names; an empty list or a name listed twice is a :class:`ConfigError`."""
    specs: dict[str, EvalAttack] = {}
    for name in attacks:
        if name in specs:
            raise ConfigError(f"attack {name!r} is listed twice in {list(attacks)}.")
        specs[name] = parse_eval_attack(name)
    if not specs:
        raise ConfigError(f"attacks must name at least one of {', '.join(eval_attack_names())}.")
    return specs


def check_inputs(x: Tensor, y: Tensor, batch_size: int) -> None:
    """Refuse a batch size below 1, mismatched shapes, and images that are not floats in [0, 1]."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"x must be (N, ...) and y (N,) with N >= 1; got {tuple(x.shape)} and {tuple(y.shape)}.")
    if not x.is_floating_point():
        raise ConfigError(f"x must be float images in [0, 1]; got dtype {x.dtype} (uint8 images: divide by 255).")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigError(f"x must lie in [0, 1] (normalization belongs inside the model); got range [{lo:.3g}, {hi:.3g}].")


def _attack_batch(spec: EvalAttack, model: nn.Module, xb: Tensor, yb: Tensor, threat: dict[str, Any]) -> Tensor:
    if spec.kind == "pgd":
        return pgd(model, xb, yb, eps=threat["eps"], step_size=threat["step_size"], steps=spec.steps,
                   norm=threat["norm"], loss=spec.loss, random_start="uniform", bn_mode="eval")
    if spec.kind == "fgsm":
        return fgsm(model, xb, yb, eps=threat["eps"], norm=threat["norm"], bn_mode="eval")
    if spec.kind == "random":
        return random_noise(xb, eps=threat["eps"], norm=threat["norm"])
    return xb


def run_eval_attacks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attacks: Sequence[str] = ("clean", "pgd20"),
    threat: Any = None,
    batch_size: int = 500,
    device: Optional[str | torch.device] = None,
    num_classes: Optional[int] = None,
    protocol: Optional[str] = None,
    aa_state_dir: Optional[str | Path] = None,
    seed: int = 0,
    progress: bool | Phases = False,
) -> AttackRun:
    """Per-sample correctness of ``model`` on images ``x`` in [0, 1] (labels ``y``) under each of ``attacks``.

    The arguments are :func:`atkit.evaluate.evaluate`'s (which see). Each attack starts from
    ``torch.manual_seed(seed)``; the caller's RNG state, the model's train/eval mode and ``requires_grad`` flags
    are restored. AutoAttack (``aa``, ``apgd``) on an adaptive protocol counts a point as broken by the same
    projected prediction that scores it.
    """
    specs = parse_attack_list(attacks)
    thr = resolve_threat(threat)
    check_inputs(x, y, batch_size)
    dev = model_device(model) if device is None else torch.device(device)
    y_cpu = y.detach().to("cpu", torch.long)
    n = x.shape[0]
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    accuracy: dict[str, float] = {}
    per_sample: dict[str, Tensor] = {}
    details: dict[str, dict[str, Any]] = {}
    attack_warnings: list[str] = []
    phases = as_phases(progress, "evaluate")

    with attack_mode(model, "eval"), torch.random.fork_rng(devices=fork_devices):
        attack_model, protocol_used = protocol_model(model, protocol)
        if phases is not None and protocol_used is not None:
            phases = phases.child(f"[{protocol_used}]")
        reporter = phases or Phases(show=False)
        attack_model.eval()
        if num_classes is None:
            num_classes = getattr(model, "num_classes", None)
            if num_classes is None:
                with torch.no_grad():
                    num_classes = model(x[:1].to(dev, torch.float32)).shape[1]
        num_classes = int(num_classes)

        def score(x_eval: Tensor, start: int) -> Tensor:
            with torch.no_grad():
                logits = model(x_eval.to(dev, torch.float32))
            return predict_labels(logits, num_classes).cpu() == y_cpu[start:start + x_eval.shape[0]]

        for name, spec in specs.items():
            bar = reporter.start(name, n)  # progress plumbing only: what each attack does is unchanged
            began = time.time()
            torch.manual_seed(seed)
            info = spec.details(thr)
            correct = torch.zeros(n, dtype=torch.bool)
            if spec.preset is not None:
                state_path = None
                if aa_state_dir is not None:
                    suffix = "" if protocol_used is None else f"_{protocol_used}"
                    state_path = Path(aa_state_dir) / f"{name}{suffix}.json"
                # On a merged view, "broken" is decided by the projected prediction that scores the point.
                result = run_autoattack(attack_model, x, y, eps=thr["eps"], norm=thr["norm"], batch_size=batch_size,
                                        state_path=state_path, seed=seed, device=dev, num_classes=num_classes,
                                        score_model=None if attack_model is model else model, on_batch=bar.sub,
                                        **copy.deepcopy(AA_PRESETS[spec.preset]))
                for start in range(0, n, batch_size):
                    correct[start:start + batch_size] = score(result.x_adv[start:start + batch_size], start)
                bar.update(n)
                info.update(per_attack=result.per_attack, resumed=result.resumed, ran_now=result.ran_now,
                            budget=result.budget, autoattack_warnings=result.warnings)
                if "skipped" in result.config:
                    info["skipped"] = result.config["skipped"]
                attack_warnings += [f"{name}: {w}" for w in result.warnings]
            else:
                for start in range(0, n, batch_size):
                    xb = x[start:start + batch_size].to(dev, torch.float32)
                    yb = y_cpu[start:start + batch_size].to(dev)
                    correct[start:start + batch_size] = score(_attack_batch(spec, attack_model, xb, yb, thr), start)
                    bar.update(xb.shape[0])
            per_sample[name] = correct
            accuracy[name] = 100.0 * int(correct.sum()) / n
            info["seconds"] = round(time.time() - began, 3)
            details[name] = info
            bar.close(format_accuracy(int(correct.sum()), n))

    return AttackRun(accuracy=accuracy, per_sample=per_sample, n=n, threat=thr, protocol=protocol_used,
                     num_classes=num_classes, seed=int(seed), device=dev, details=details,
                     attack_warnings=attack_warnings)


__all__ = ["AttackRun", "check_inputs", "parse_attack_list", "run_eval_attacks"]

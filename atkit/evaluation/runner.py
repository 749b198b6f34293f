"""The one attack loop: every evaluation attack, on every image, under one setup, scored by one prediction.

:func:`run_attacks` is what :func:`atkit.evaluation.evaluate` and the sanity checks run their attacks with. For
each attack it seeds ``torch.manual_seed(setup.seed)``, hands the attack its :class:`AttackTarget` (batch by
batch, or all images at once for a whole-set attack), scores the adversarial images by
:func:`atkit.models.predict_labels` of the model's own logits, and records the attack's settings, seconds, the
forward and backward passes it made (per image too), for a dummy-class model AutoAttack's own raw-argmax
accuracy (the bookkeeping of the published protocol), and a warning when the model's outputs are not finite.
The model's train/eval mode, its parameters' ``requires_grad`` flags and the caller's RNG state are restored.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..attacks.mode import attack_mode
from ..core.progress import Phases
from ..core.stats import format_accuracy
from ..core.utils import ConfigError
from ..models.dummy import predict_labels
from .attack import EvalAttack
from .setup import EvalSetup
from .target import AttackTarget, PassCount, build_targets, counting_passes


@dataclass
class AttackRun:
    """Per-image results of :func:`run_attacks` on ``n`` images.

    ``per_sample``: attack label -> bool ``(n,)`` on the CPU, True where the image is classified correctly;
    ``accuracy``: label -> percent; ``details``: label -> the attack's settings, seconds, passes and own
    record; ``attack_warnings``: ``"<label>: <message>"`` (AutoAttack's own warnings, non-finite outputs);
    ``protocol``: the DUCAT protocol used (None for a plain model)."""

    accuracy: dict[str, float]
    per_sample: dict[str, Tensor]
    n: int
    setup: EvalSetup
    protocol: Optional[str]
    num_classes: int
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_warnings: list[str] = field(default_factory=list)


def check_inputs(x: Tensor, y: Tensor) -> None:
    """Refuse mismatched shapes and images that are not floats in [0, 1], before any work."""
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"x must be (N, ...) and y (N,) with N >= 1; got {tuple(x.shape)} and {tuple(y.shape)}.")
    if not x.is_floating_point():
        raise ConfigError(f"x must be float images in [0, 1]; got dtype {x.dtype} (uint8 images: divide by 255).")
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= 0.0 and hi <= 1.0):
        raise ConfigError(f"x must lie in [0, 1] (normalization belongs inside the model); got range "
                          f"[{lo:.3g}, {hi:.3g}].")


def stage_forward_passes(step: str, budget: Mapping[str, Any]) -> int:
    """Upper bound of the forward passes per image of one AutoAttack stage from its budget: APGD runs every
    iteration of every restart (times the target classes for APGD-T), FAB one forward-backward per iteration
    and restart (and target), Square one query per forward; broken points leave earlier, so this is a bound."""
    n_iter, restarts = int(budget.get("n_iter") or 0), int(budget.get("n_restarts") or 1)
    targets = int(budget.get("n_target_classes") or 1)
    if step == "square":
        return int(budget.get("n_queries") or 0) * restarts
    return n_iter * restarts * targets


class StageProgress:
    """Progress inside a whole-set attack: before each stage what it will cost (images x forward passes, then a
    time estimate from the first batch), during it the forward passes done against that bound with an ETA (the
    official attacks report nothing between batches, so the passes are counted at the model)."""

    def __init__(self, bar: Any, phases: Optional[Phases], interval: float = 2.0) -> None:
        self.bar, self.phases, self.interval = bar, phases, interval
        self.step: Optional[str] = None
        self.expected = self.done = self.images = 0
        self.began = self.last = time.time()
        self.first_batch_noted = False

    def stage(self, step: str, images: int, budget: Mapping[str, Any]) -> None:
        self.step, self.images = step, images
        self.expected = images * stage_forward_passes(step, budget)
        self.done, self.began, self.first_batch_noted = 0, time.time(), False
        if self.phases is not None:
            self.phases.note(f"{step}: {images} images x up to {stage_forward_passes(step, budget):,} forward passes "
                             f"each (budget {dict(budget)})")

    def forward(self, images: int) -> None:
        self.done += images
        now = time.time()
        if self.step is None or now - self.last < self.interval:
            return
        self.last = now
        shown = f"{self.step} {self.done:,}/{self.expected:,} forward passes"
        if self.expected and self.done:
            left = (now - self.began) * max(self.expected - self.done, 0) / self.done
            shown += f", ETA at most {_seconds(left)}"
        self.bar.set_postfix_str(shown)

    def batch(self, step: str, done: int, total: int) -> None:
        self.bar.sub(step, done, total)
        if not self.first_batch_noted and self.phases is not None and done < total:
            self.first_batch_noted = True
            per_image = (time.time() - self.began) / max(done, 1)
            self.phases.note(f"{step}: first batch {done} images in {_seconds(per_image * done)}, about "
                             f"{_seconds(per_image * (total - done))} more for this stage")


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def _num_classes(model: nn.Module, x: Tensor, setup: EvalSetup, device: torch.device) -> int:
    if setup.num_classes is not None:
        return int(setup.num_classes)
    if getattr(model, "num_classes", None) is not None:
        return int(model.num_classes)
    with torch.no_grad():
        return int(model(x[:1].to(device, torch.float32)).shape[1])


def _state_path(setup: EvalSetup, label: str, protocol: Optional[str]) -> Optional[Path]:
    if setup.state_dir is None:
        return None
    suffix = "" if protocol is None else f"_{protocol}"
    safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in label)
    return Path(setup.state_dir) / f"{safe}{suffix}.json"


def run_attacks(model: nn.Module, x: Tensor, y: Tensor, attacks: Mapping[str, EvalAttack], setup: EvalSetup,
                *, protocol: Optional[str] = None, phases: Optional[Phases] = None) -> AttackRun:
    """Per-image correctness of ``model`` on ``x`` (floats in [0, 1], labels ``y``) under each of ``attacks``
    (``label -> EvalAttack``, :func:`atkit.evaluation.attack.parse_attacks`) and ``protocol`` (a DUCAT
    protocol for a dummy-class model; None: the published one for such a model, nothing for a plain one)."""
    check_inputs(x, y)
    dev = setup.resolved_device(model)
    y_cpu = y.detach().to("cpu", torch.long)
    n = int(x.shape[0])
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    accuracy: dict[str, float] = {}
    per_sample: dict[str, Tensor] = {}
    details: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    dummy = bool(getattr(model, "dummy_classes", False))

    with attack_mode(model, "eval"), torch.random.fork_rng(devices=fork_devices):
        num_classes = _num_classes(model, x, setup, dev)
        loss_model, scored = build_targets(model, protocol, num_classes)
        used = (protocol or "published") if dummy else None
        if phases is not None and used is not None:
            phases = phases.child(f"[{used}]")
        reporter = phases or Phases(show=False)

        def score_batch(images: Tensor, start: int, flags: dict[str, Any]) -> None:
            """Scored correctness, the protocol's raw-argmax correctness and non-finite outputs of one batch."""
            flags["passes"].paused = True
            with torch.no_grad():
                logits = model(images.to(dev, torch.float32))
            flags["passes"].paused = False
            yb = y_cpu[start:start + logits.shape[0]]
            flags["bad"] += int((~torch.isfinite(logits).all(dim=1)).sum())
            flags["correct"][start:start + logits.shape[0]] = predict_labels(logits, num_classes).cpu() == yb
            if dummy:
                flags["raw"][start:start + logits.shape[0]] = scored.protocol_logits(logits).argmax(1).cpu() == yb

        clean_flags: Optional[Tensor] = None
        if any(a.adversarial for a in attacks.values()):
            # The clean image lies in every ball: an image wrong unperturbed is broken under every attack.
            probe: dict[str, Any] = {"correct": torch.zeros(n, dtype=torch.bool), "bad": 0,
                                     "raw": torch.zeros(n, dtype=torch.bool), "passes": PassCount()}
            for start in range(0, n, setup.batch_size):
                score_batch(x[start:start + setup.batch_size], start, probe)
            clean_flags = probe["correct"]

        for label, attack in attacks.items():
            bar = reporter.start(label, n)
            began = time.time()
            torch.manual_seed(setup.seed)
            info = attack.describe(setup.threat)
            stages = StageProgress(bar, phases, interval=getattr(phases, "interval", 2.0))
            target = AttackTarget(model=loss_model, scored=scored if attack.scored_view else loss_model,
                                  threat=dict(setup.threat), num_classes=num_classes, device=dev,
                                  batch_size=setup.batch_size, seed=setup.seed, protocol=used,
                                  state_path=_state_path(setup, label, used), on_progress=stages.batch,
                                  on_stage=stages.stage)
            flags: dict[str, Any] = {"correct": torch.zeros(n, dtype=torch.bool), "bad": 0,
                                     "raw": torch.zeros(n, dtype=torch.bool)}
            with counting_passes(model, on_forward=stages.forward if attack.whole_set else None) as passes:
                flags["passes"] = passes
                if attack.whole_set:
                    outcome = attack.run_whole(target, x, y_cpu)
                    info.update(outcome.info, autoattack_warnings=list(outcome.warnings))
                    warnings += [f"{label}: {w}" for w in outcome.warnings]
                else:
                    for start in range(0, n, setup.batch_size):
                        xb = x[start:start + setup.batch_size].to(dev, torch.float32)
                        yb = y_cpu[start:start + setup.batch_size].to(dev)
                        score_batch(attack.perturb(target, xb, yb), start, flags)
                        bar.update(xb.shape[0])
            if attack.whole_set:
                for start in range(0, n, setup.batch_size):
                    score_batch(outcome.x_adv[start:start + setup.batch_size], start, flags)
                bar.update(n)
            correct, bad = flags["correct"], flags["bad"]
            if attack.adversarial and clean_flags is not None:
                info["wrong_unperturbed_counted_broken"] = int((correct & ~clean_flags).sum())
                correct = correct & clean_flags
            if bad:
                warnings.append(f"{label}: the model's outputs are not finite (NaN or inf) on {bad} of {n} images; "
                                "their predictions, and every accuracy from them, mean nothing")
            per_sample[label] = correct
            accuracy[label] = 100.0 * int(correct.sum()) / n
            info["passes"] = passes.per_image(n)
            if dummy:
                info["raw_argmax_accuracy"] = 100.0 * int(flags["raw"].sum()) / n
            info["seconds"] = round(time.time() - began, 3)
            details[label] = info
            bar.close(format_accuracy(int(correct.sum()), n))

    return AttackRun(accuracy=accuracy, per_sample=per_sample, n=n, setup=dataclasses.replace(setup, device=dev),
                     protocol=used, num_classes=num_classes, details=details, attack_warnings=warnings)


__all__ = ["AttackRun", "check_inputs", "run_attacks"]

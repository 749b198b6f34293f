"""What an evaluation attack attacks: the model under a DUCAT protocol, the prediction that scores it, and a
view of the model whose argmax is that prediction.

A dummy-class model (DUCAT) has 2C outputs and is scored by its projected prediction
(:func:`atkit.models.predict_labels`: the argmax over all 2C outputs, a dummy mapped to its class). Its
protocols decide what the attacks' losses see (:func:`atkit.models.dummy.protocol_model`): the raw 2C logits
(``published``, the papers' protocol) or a merged C-class view (``adaptive``: logsumexp of each class and its
dummy; ``adaptive_max``: their max). The argmax of what the loss sees can differ from the scored prediction: on
the raw logits whenever a dummy output is the largest, on the logsumexp view whenever a rival class's two outputs
together outweigh the true class's single large one. An attack that keeps its own record of which points are
already broken (AutoAttack's APGD, APGD-T, FAB-T and Square read ``logits.argmax(1) != y``, at the start, after
every iteration and after every restart) would then leave a point alone that the score calls correct, and the
point would be scored robust without ever being attacked.

:class:`ScoredView` closes that gap at its root. It returns the protocol's logits unchanged wherever their
argmax already is the scored prediction; elsewhere it lifts the scored class's logit to the next float above
the largest logit (``torch.nextafter``), the smallest change that makes the argmax the scored prediction. The
lift is a constant in the backward pass (the gradient stays that of the protocol's logits) and is recomputed
at every forward pass, so the attack's bookkeeping follows the scored prediction everywhere, inside one
official attack call as well as between calls. Attacks scored only at the end (PGD, CW, FGSM, random noise) see
the protocol's model itself, so their loss is exactly the protocol's.

A plain C-output model is scored by its own argmax: its view is the model itself.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..models.dummy import PROTOCOL_MERGE, merge_dummy_logits, predict_labels, protocol_model


def lift_to_scored(logits: Tensor, scored: Tensor) -> Tensor:
    """``logits`` with, in every row whose argmax is not ``scored``, the ``scored`` entry raised to the next
    float above the row's maximum (a constant in the backward pass); other rows unchanged."""
    argmax = logits.argmax(dim=1)
    disagree = argmax != scored
    if not bool(disagree.any()):
        return logits
    top = logits.detach().max(dim=1).values
    lifted = torch.nextafter(top, torch.full_like(top, float("inf")))
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[disagree, scored[disagree]] = True
    # value: the lifted float exactly (x + 0.0 is x); gradient: that of the logit itself.
    moved = lifted.unsqueeze(1).expand_as(logits) + (logits - logits.detach())
    return torch.where(mask, moved, logits)


class ScoredView(nn.Module):
    """The protocol's logits of a dummy-class model, lifted where their argmax is not the scored prediction
    (module docstring). One forward pass of the wrapped model per call."""

    def __init__(self, model: nn.Module, num_classes: int, protocol: str = "published") -> None:
        super().__init__()
        self.base = model
        self.num_classes = int(num_classes)
        self.protocol = protocol
        self.merge = PROTOCOL_MERGE.get(protocol)  # None: the raw 2C logits (published)

    def protocol_logits(self, raw: Tensor) -> Tensor:
        return raw if self.merge is None else merge_dummy_logits(raw, self.num_classes, self.merge)

    def forward(self, x: Tensor) -> Tensor:
        raw = self.base(x)
        return lift_to_scored(self.protocol_logits(raw), predict_labels(raw, self.num_classes))


@dataclass
class PassCount:
    """Forward and backward passes of the attacked model, counted in images (a batch of 128 is 128)."""

    forward: int = 0
    backward: int = 0
    paused: bool = False  # while the evaluation scores the attack's images: those passes are not the attack's

    def per_image(self, n: int) -> dict[str, float]:
        return {"forward": self.forward, "backward": self.backward,
                "forward_per_image": round(self.forward / max(n, 1), 2),
                "backward_per_image": round(self.backward / max(n, 1), 2)}


@contextlib.contextmanager
def counting_passes(model: nn.Module, on_forward: Optional[Callable[[int], None]] = None) -> Iterator[PassCount]:
    """Count the images that go forward through ``model`` and the images whose output receives a gradient
    (one backward pass each), while the context is open. ``on_forward(images)`` is called after each forward
    pass (progress inside an attack that reports nothing itself)."""
    count = PassCount()

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if count.paused:
            return
        first = inputs[0] if isinstance(inputs, tuple) and inputs else None
        n = int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 0
        count.forward += n
        logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
        if isinstance(logits, Tensor) and logits.requires_grad:
            def on_grad(grad: Tensor, n: int = n) -> None:
                count.backward += n
            logits.register_hook(on_grad)
        if on_forward is not None:
            on_forward(n)

    handle = model.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@dataclass
class AttackTarget:
    """Everything an attack needs about what it attacks, resolved once per protocol.

    ``model``: the model the attack's loss sees (the protocol's view of a dummy-class model, else the model);
    ``scored``: the view whose argmax is the scored prediction (``model`` itself for a plain model);
    ``threat``: ``{norm, eps, step_size}``; ``num_classes``: the real classes C; ``seed``: every attack starts
    from ``torch.manual_seed(seed)``; ``state_path``: where a resumable whole-set attack keeps its state (None:
    not resumable); ``on_progress(step, done, total)`` and ``on_stage(step, images, budget)``: progress inside a
    whole-set attack (:class:`atkit.evaluation.runner.StageProgress`).
    """

    model: nn.Module
    scored: nn.Module
    threat: dict[str, Any]
    num_classes: int
    device: torch.device
    batch_size: int
    seed: int = 0
    protocol: Optional[str] = None
    state_path: Optional[Path] = None
    on_progress: Optional[Callable[[str, int, int], None]] = None
    on_stage: Optional[Callable[[str, int, dict], None]] = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_targets(model: nn.Module, protocol: Optional[str], num_classes: int) -> tuple[nn.Module, nn.Module]:
    """``(what the loss sees, the scored view)`` for ``model`` under ``protocol`` (None: a plain model)."""
    attack_model, used = protocol_model(model, protocol)
    if not getattr(model, "dummy_classes", False):
        return attack_model, attack_model
    scored = ScoredView(model, num_classes, used or "published")
    scored.train(model.training)  # a new module starts in train mode; see protocol_model
    return attack_model, scored


__all__ = ["AttackTarget", "PassCount", "ScoredView", "build_targets", "counting_passes", "lift_to_scored"]

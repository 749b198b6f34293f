"""One evaluation setup, resolved once: the threat model, protocol, precision, batch size, seed, device, class
count and where resumable attacks keep their state. :func:`atkit.evaluation.evaluate` builds it from its
arguments; the sanity checks and the trainer pass it on instead of a clump of keywords."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ..attacks.threat import resolve_threat
from ..core.utils import ConfigError, check_choice, model_device
from ..models.dummy import PROTOCOLS

#: Evaluation precisions: exact fp32 (TF32 off; the reported numbers), fp32 with TF32 matmuls/convolutions,
#: bf16 autocast of the model's forwards, or "auto" (bf16 on a CUDA device, exact fp32 elsewhere).
EVAL_PRECISIONS = ("fp32", "tf32", "bf16", "auto")


@dataclass(frozen=True)
class EvalSetup:
    """What every attack of one evaluation shares (module docstring). ``threat``: ``{norm, eps, step_size}``
    (:func:`atkit.attacks.threat.resolve_threat`); ``protocols``: the DUCAT protocols a dummy-class model is
    evaluated under (all of :data:`PROTOCOLS` by default; ignored for a plain model); ``num_classes``: the real
    classes C (None: the model's ``num_classes``, else its logit width); ``state_dir``: folder of resumable
    attacks' state files (None: not resumable)."""

    threat: dict[str, Any] = field(default_factory=lambda: resolve_threat(None))
    protocols: tuple[str, ...] = PROTOCOLS
    precision: str = "fp32"
    batch_size: int = 500
    seed: int = 0
    device: Optional[torch.device] = None
    num_classes: Optional[int] = None
    state_dir: Optional[Path] = None

    @classmethod
    def resolve(cls, *, threat: Any = None, protocol: Any = None, precision: str = "fp32", batch_size: int = 500,
                seed: int = 0, device: Any = None, num_classes: Optional[int] = None,
                state_dir: Any = None) -> "EvalSetup":
        """Check every value and build the setup; bad values are one-line :class:`ConfigError`\\ s."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed={seed!r} must be an integer.")
        check_choice("evaluation precision", precision, EVAL_PRECISIONS)
        if protocol is None:
            protocols: tuple[str, ...] = PROTOCOLS
        else:
            protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
            if not protocols:
                raise ConfigError(f"protocol=[] names no protocol; give one or more of {', '.join(PROTOCOLS)}")
            for p in protocols:
                check_choice("evaluation protocol", p, PROTOCOLS)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 2):
            raise ConfigError(f"num_classes={num_classes!r} must be an integer >= 2.")
        return cls(threat=resolve_threat(threat), protocols=protocols, precision=precision, batch_size=batch_size,
                   seed=seed, device=None if device is None else torch.device(device), num_classes=num_classes,
                   state_dir=None if state_dir is None else Path(state_dir))

    def replace(self, **changes: Any) -> "EvalSetup":
        if "threat" in changes:
            changes["threat"] = resolve_threat(changes["threat"])
        return dataclasses.replace(self, **changes)

    def resolved_device(self, model: nn.Module) -> torch.device:
        return model_device(model) if self.device is None else torch.device(self.device)

    def record(self) -> dict[str, Any]:
        """JSON-ready: what the numbers were produced under."""
        return {"threat": dict(self.threat), "precision": self.precision, "batch_size": self.batch_size,
                "seed": self.seed, "device": None if self.device is None else str(self.device)}


__all__ = ["EVAL_PRECISIONS", "EvalSetup"]

"""An evaluation's result: accuracies with their per-image flags, the robust accuracy behind Mean and NRR, the
sanity checks, the warnings, what produced it, and for a dummy-class model every protocol's result beside the
per-sample worst case over them (the headline)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..core.stats import accuracy_intervals, format_accuracy
from ..core.utils import ConfigError, atomic_write_json
from .attack import robust_attacks, trade_off_scores, worst_case_name
from .sanity.report import checks_summary

EVAL_FORMAT = "atkit-eval/1"
#: The headline of a dummy-class model: per sample, correct only if correct under every protocol.
WORST_CASE = "worst_case"
PROTOCOL_LABELS = {
    WORST_CASE: "worst case over the protocols (headline)",
    "published": "published: the papers' protocol (attacks on the raw 2C logits)",
    "adaptive": "adaptive: attacks on the logsumexp-merged C logits",
    "adaptive_max": "adaptive: attacks on the max-merged C logits",
}


def flags_to_str(flags: Tensor) -> str:
    """Per-image flags as a string, ``"1"`` correct and ``"0"`` not (compact, and readable by eye)."""
    return "".join("1" if bool(v) else "0" for v in flags.tolist())


def str_to_flags(text: str) -> Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)


@dataclass
class EvalResult:
    """Accuracies of one model on ``n`` images.

    ``accuracy``: attack -> percent; ``per_sample``: attack -> bool ``(n,)`` on the CPU, True where the image is
    classified correctly under that attack. ``robust_accuracy``: the per-sample worst case over
    ``robust_attacks`` (every robust attack that ran: an image counts only if none broke it), named by
    ``robust_metric`` (``"aa"``, ``"worst of pgd20, cw"``; None if no robust attack ran); ``mean = (Clean + R)/2``
    and ``nrr = 2 Clean R / (Clean + R)`` with ``R`` that accuracy (docs/methods.md, common protocol).
    ``details``: per attack its settings, seconds, forward/backward passes (total and per image) and, for
    AutoAttack, its own per-stage counts. ``protocol``: the DUCAT protocol (``"worst_case"`` for the headline of a
    dummy-class model, whose ``protocols`` then holds each protocol's result), None for a plain model.
    ``checks``: the sanity checks (:mod:`atkit.evaluation.sanity`) or None when they did not run;
    ``attack_warnings``: AutoAttack's own warnings and non-finite outputs; ``notes``: warnings about the model
    itself (at chance level); :attr:`warnings` lists all of them with the failed checks.
    ``provenance``: what produced the numbers (:mod:`atkit.core.provenance`).
    """

    accuracy: dict[str, float]
    per_sample: dict[str, Tensor]
    n: int
    robust_metric: Optional[str] = None
    mean: Optional[float] = None
    nrr: Optional[float] = None
    threat: dict[str, Any] = field(default_factory=dict)
    protocol: Optional[str] = None
    num_classes: Optional[int] = None
    seed: int = 0
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: Optional[list[dict[str, Any]]] = None
    provenance: Optional[dict[str, Any]] = None
    robust_accuracy: Optional[float] = None
    robust_attacks: list[str] = field(default_factory=list)
    attack_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"
    protocols: dict[str, "EvalResult"] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.robust_metric is None and self.robust_accuracy is None and self.per_sample:
            self.set_robust()

    # -- derived numbers ------------------------------------------------------------------------------------
    def set_robust(self) -> None:
        """Fill the robust accuracy, its name, Mean and NRR from the per-image results (the worst case)."""
        self.robust_attacks = robust_attacks(list(self.accuracy))
        flags = self.robust_per_sample()
        self.robust_metric = worst_case_name(self.robust_attacks)
        self.robust_accuracy = None if flags is None else 100.0 * int(flags.sum()) / self.n
        self.mean, self.nrr = trade_off_scores(self.accuracy.get("clean"), self.robust_accuracy)

    @property
    def warnings(self) -> list[str]:
        """One line per failed sanity check (``"<name>: <detail>"``), then the notes about the model and the
        attacks' own warnings; empty when all is well."""
        failed = [f"{c['name']}: {c['detail']}" for c in (self.checks or []) if not c.get("passed", True)]
        return failed + list(self.notes) + list(self.attack_warnings)

    def robust_per_sample(self) -> Optional[Tensor]:
        """Per-image correctness behind :attr:`robust_accuracy` (AND over :attr:`robust_attacks`)."""
        if not self.robust_attacks:
            return None
        flags = torch.ones(self.n, dtype=torch.bool)
        for name in self.robust_attacks:
            flags &= self.per_sample[name]
        return flags

    def failed(self, name: str) -> Tensor:
        """Indices of the images misclassified under attack ``name``."""
        return (~self.per_sample[name]).nonzero().flatten()

    def __str__(self) -> str:
        """One line per attack with its 95 % Wilson interval and n (``pgd20: 55.60 % [51.2, 59.9] (n=500)``), the
        robust accuracy with its name, Mean and NRR, then every warning."""
        lines = [f"{name:>12s}: {format_accuracy(int(flags.sum()), self.n)}" for name, flags in self.per_sample.items()]
        robust = self.robust_per_sample()
        if robust is not None:
            scores = f"; Mean {self.mean:.2f}, NRR {self.nrr:.2f}" if self.mean is not None else ""
            lines.append(f"{'robust':>12s}: {format_accuracy(int(robust.sum()), self.n)}, {self.robust_metric}{scores}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # -- tables ---------------------------------------------------------------------------------------------
    def summary_row(self, label: Optional[str] = None) -> dict[str, Any]:
        """One table row: accuracies (percent), robust accuracy and its name, Mean, NRR, n and a "checks" cell
        (``"ok"``, ``"WARN: zero-gradients, ..."`` or ``"not run"``), so a failed check is visible in tables."""
        row: dict[str, Any] = {} if label is None else {"model": label}
        row.update(self.accuracy)
        row.update({"robust": self.robust_accuracy, "robust_metric": self.robust_metric, "mean": self.mean,
                    "nrr": self.nrr, "n": self.n, "checks": checks_summary(self.checks)})
        return row

    def table(self, label: Optional[str] = None) -> Any:
        """:meth:`summary_row` as a one-row pandas DataFrame (see :func:`results_table` for several)."""
        return results_table({label or "model": self})

    # -- JSON -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``per_sample`` becomes one string per attack (:func:`flags_to_str`). A dummy-class
        headline carries each protocol's record under ``"protocols"`` and what each is under
        ``"protocol_labels"``."""
        out = {
            "format": EVAL_FORMAT,
            "n": self.n,
            "accuracy": dict(self.accuracy),
            **accuracy_intervals(self.per_sample),
            "robust_metric": self.robust_metric,
            "mean": self.mean,
            "nrr": self.nrr,
            "threat": dict(self.threat),
            "protocol": self.protocol,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "precision": self.precision,
            "details": self.details,
            "per_sample": {k: flags_to_str(v) for k, v in self.per_sample.items()},
            "checks": self.checks,
            "warnings": self.warnings,
            # The warnings as they stand now (checks may be attached after the evaluation ran).
            "provenance": None if self.provenance is None else {**self.provenance, "warnings": self.warnings},
            "robust_accuracy": self.robust_accuracy,
            "robust_attacks": list(self.robust_attacks),
            "attack_warnings": list(self.attack_warnings),
            "notes": list(self.notes),
        }
        if self.protocols:
            out["protocols"] = {p: r.to_dict() for p, r in self.protocols.items()}
            out["protocol_labels"] = {p: PROTOCOL_LABELS[p] for p in [self.protocol, *self.protocols]
                                      if p in PROTOCOL_LABELS}
        return out

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` atomically (readers never see a half-written file)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalResult":
        if data.get("format") != EVAL_FORMAT:
            raise ConfigError(f"not an atkit evaluation result (format {data.get('format')!r}, expected "
                              f"{EVAL_FORMAT!r}).")
        result = cls(
            accuracy={k: float(v) for k, v in data["accuracy"].items()},
            per_sample={k: str_to_flags(v) for k, v in data["per_sample"].items()},
            n=int(data["n"]),
            robust_metric=data.get("robust_metric"),
            mean=data.get("mean"),
            nrr=data.get("nrr"),
            threat=dict(data.get("threat", {})),
            protocol=data.get("protocol"),
            num_classes=data.get("num_classes"),
            seed=int(data.get("seed", 0)),
            details=dict(data.get("details", {})),
            checks=data.get("checks"),
            provenance=data.get("provenance"),
            robust_accuracy=data.get("robust_accuracy"),
            robust_attacks=list(data.get("robust_attacks") or []),
            attack_warnings=list(data.get("attack_warnings") or []),
            notes=list(data.get("notes") or []),
            precision=data.get("precision") or "fp32",
            protocols={p: cls.from_dict(r) for p, r in (data.get("protocols") or {}).items()},
        )
        return result

    @classmethod
    def from_json(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


def worst_case_over_protocols(results: Mapping[str, EvalResult]) -> EvalResult:
    """Per-image worst case of one model's results under several DUCAT protocols: for each attack run under every
    protocol, an image is correct only if it is correct under all of them (the published protocol can only
    over-report, DUCAT's adaptive attacks; so the headline is the worst case). ``protocol = "worst_case"``,
    ``protocols`` the inputs, ``details[attack]`` each protocol's accuracy; Mean and NRR from the worst-case
    accuracies. The results must share images and labels (same ``n``, same clean flags)."""
    if not results:
        raise ConfigError("worst_case_over_protocols needs at least one protocol's result.")
    items = list(results.items())
    first = items[0][1]
    for protocol, res in items:
        if res.n != first.n or ("clean" in res.per_sample and "clean" in first.per_sample
                                and not torch.equal(res.per_sample["clean"], first.per_sample["clean"])):
            raise ConfigError(f"protocol {protocol!r} was evaluated on other images than {items[0][0]!r} "
                              f"(n {res.n} vs {first.n}, or different clean predictions).")
    names = [name for name in first.accuracy if all(name in r.per_sample for _, r in items)]
    per_sample: dict[str, Tensor] = {}
    accuracy: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for name in names:
        flags = torch.ones(first.n, dtype=torch.bool)
        for _, res in items:
            flags &= res.per_sample[name]
        per_sample[name] = flags
        accuracy[name] = 100.0 * int(flags.sum()) / first.n
        details[name] = {"worst_case_of": [p for p, _ in items],
                         "accuracy_by_protocol": {p: r.accuracy[name] for p, r in items}}
    warnings = [f"[{p}] {w}" for p, r in items for w in r.attack_warnings]
    result = EvalResult(accuracy=accuracy, per_sample=per_sample, n=first.n, threat=dict(first.threat),
                        protocol=WORST_CASE, num_classes=first.num_classes, seed=first.seed, details=details,
                        attack_warnings=warnings, notes=list(first.notes), precision=first.precision,
                        protocols=dict(items))
    result.set_robust()
    if first.provenance is not None:  # what produced the protocols' numbers, the same for each
        result.provenance = {**first.provenance, "worst_case_of": [p for p, _ in items]}
    return result


def results_table(results: Mapping[str, EvalResult] | Sequence[EvalResult]) -> Any:
    """A pandas DataFrame with one :meth:`EvalResult.summary_row` per result (indexed by label), with the
    "checks" column showing failed sanity checks as ``"WARN: ..."``."""
    import pandas as pd  # why: heavy; only tables need it

    items = results.items() if isinstance(results, Mapping) else ((str(i), r) for i, r in enumerate(results))
    rows = [r.summary_row(label) for label, r in items]
    return pd.DataFrame(rows).set_index("model")


__all__ = ["EVAL_FORMAT", "EvalResult", "PROTOCOL_LABELS", "WORST_CASE", "flags_to_str", "results_table",
           "str_to_flags", "worst_case_over_protocols"]

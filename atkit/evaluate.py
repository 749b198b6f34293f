"""One evaluation entry point: clean and robust accuracy of a model under a list of attacks.

Attacks (docs/methods.md, common protocol, "evaluation attacks"; names read by
:func:`atkit.attacks.eval_attacks.parse_eval_attack`, run by :func:`atkit.attacks.eval_runner.run_eval_attacks`):

* ``clean``
* ``pgdN`` (``pgd10``, ``pgd20``, ``pgd100``, any N >= 1): PGD on the cross-entropy, uniform random
  start in the eps-ball, step size from the threat model, BatchNorm in eval mode.
* ``cw`` / ``cwN``: PGD on the CW margin ``max_{k != y} z_k - z_y`` within the same eps-ball, 30
  steps by default (the released code of one of the papers runs CW without an eps bound; not copied).
* ``aa``: AutoAttack ``standard`` with the official code (:func:`atkit.attacks.run_autoattack`).
* ``apgd``: a cheaper AutoAttack subset, APGD-CE then APGD-DLR with one restart each.
* ``fgsm``: one signed step of size eps; ``random``: uniform noise in the eps-ball.

Every accuracy is by :func:`atkit.models.predict_labels`, so a DUCAT model with 2C outputs is scored
by its projected prediction; :func:`evaluate_dummy_protocols` runs the published and the adaptive
DUCAT protocols side by side, headed by their per-sample worst case
(:func:`worst_case_over_protocols`), the number a dummy-class model is reported by. Accuracies are in
percent, as the papers report.

Mean and NRR use the per-sample worst case over every robust attack that ran (``pgdN``, ``cw``/``cwN``,
``apgd``, ``aa``): a sample counts as robust only if no attack broke it, so a weaker attack in the
list can never raise the number. ``EvalResult.robust_metric`` names it (``"aa"``, or
``"worst of pgd20, cw"``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from . import sanity as sanity_checks  # by module (late binding): `sanity` is evaluate's argument name
from .attacks.eval_attacks import (ATTACK_NAMES, CW_DEFAULT_STEPS, EVAL_ATTACKS, parse_eval_attack, robust_attacks,
                                   trade_off_scores, worst_case_name)
from .attacks.eval_runner import run_eval_attacks
from .models.dummy import PROTOCOLS
from .progress import Phases, as_phases
from .provenance import build_provenance
from .sanity import checks_summary
from .stats import accuracy_intervals
from .utils import ConfigError, atomic_write_json, unknown_name_error

EVAL_FORMAT = "atkit-eval/1"
# The headline of a dummy-class model: per sample, correct only if correct under every protocol.
WORST_CASE = "worst_case"
PROTOCOL_LABELS = {
    WORST_CASE: "worst case over the protocols (headline)",
    "published": "published: the papers' protocol (attacks on the raw 2C logits)",
    "adaptive": "adaptive: attacks on the logsumexp-merged C logits",
    "adaptive_max": "adaptive: attacks on the max-merged C logits",
}


# ---------------------------------------------------------------------------------------- result
def _flags_to_str(flags: Tensor) -> str:
    return "".join("1" if bool(v) else "0" for v in flags.tolist())


@dataclass
class EvalResult:
    """Accuracies of one model on ``n`` samples.

    ``accuracy``: attack name -> accuracy in percent (0-100). ``per_sample``: name -> bool tensor
    ``(n,)`` on CPU, True where the sample is classified correctly under that attack.
    ``robust_accuracy``: the per-sample worst case over ``robust_attacks`` (every robust attack that
    ran: a sample counts only if none broke it); ``robust_metric`` names it (``"aa"``,
    ``"worst of pgd20, cw"``; None if no robust attack ran). ``mean = (Clean + R) / 2`` and
    ``nrr = 2 Clean R / (Clean + R)`` with ``R`` that accuracy (docs/methods.md, common protocol), percent,
    None without ``clean`` or a robust attack. ``details``: per attack, its settings and seconds
    (and AutoAttack's per-attack counts). ``protocol``: DUCAT protocol (or ``"worst_case"``, see
    :func:`worst_case_over_protocols`) or None for a plain model.
    ``checks``: the sanity checks of :mod:`atkit.sanity` (``evaluate(..., sanity=True)``), each
    ``{name, passed, detail, values}``, or None when they were not run. ``attack_warnings``:
    AutoAttack's own warnings (randomized model, zero gradients, ...), ``"<attack>: <stage>: <message>"``,
    recorded whether or not the checks ran. :attr:`warnings` lists both; :meth:`summary_row` /
    :meth:`table` show the failed checks in a "checks" column.
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
    provenance: Optional[dict[str, Any]] = None  # what produced the numbers (atkit.provenance.build_provenance)
    robust_accuracy: Optional[float] = None
    robust_attacks: list[str] = field(default_factory=list)
    attack_warnings: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """One line per failed sanity check, ``"<name>: <detail>"``, then AutoAttack's own warnings
        (:attr:`attack_warnings`); empty when all checks passed (or none ran) and AutoAttack raised none."""
        failed = [f"{c['name']}: {c['detail']}" for c in (self.checks or []) if not c.get("passed", True)]
        return failed + list(self.attack_warnings)

    def robust_per_sample(self) -> Optional[Tensor]:
        """Per-sample correctness behind :attr:`robust_accuracy` (AND over :attr:`robust_attacks`)."""
        if not self.robust_attacks:
            return None
        flags = torch.ones(self.n, dtype=torch.bool)
        for name in self.robust_attacks:
            flags &= self.per_sample[name]
        return flags

    def summary_row(self, label: Optional[str] = None) -> dict[str, Any]:
        """One table row: accuracies (percent), mean, NRR and a "checks" cell (``"ok"``,
        ``"WARN: zero-gradients, ..."`` or ``"not run"``), so a failed check is visible in tables."""
        row: dict[str, Any] = {} if label is None else {"model": label}
        row.update(self.accuracy)
        row.update({"robust": self.robust_accuracy, "robust_metric": self.robust_metric, "mean": self.mean,
                    "nrr": self.nrr, "n": self.n, "checks": checks_summary(self.checks)})
        return row

    def table(self, label: Optional[str] = None) -> Any:
        """:meth:`summary_row` as a one-row pandas DataFrame (see :func:`results_table` for several)."""
        return results_table({label or "model": self})

    def failed(self, name: str) -> Tensor:
        """Indices of the samples misclassified under attack ``name``."""
        return (~self.per_sample[name]).nonzero().flatten()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict. ``per_sample`` becomes one string per attack, character ``i`` being
        ``"1"`` if sample ``i`` is correct and ``"0"`` if not (compact, and readable by eye)."""
        return {
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
            "details": self.details,
            "per_sample": {k: _flags_to_str(v) for k, v in self.per_sample.items()},
            "checks": self.checks,
            "warnings": self.warnings,
            # The warnings as they stand now (checks may be attached after the evaluation ran).
            "provenance": None if self.provenance is None else {**self.provenance, "warnings": self.warnings},
            "robust_accuracy": self.robust_accuracy,
            "robust_attacks": list(self.robust_attacks),
            "attack_warnings": list(self.attack_warnings),
        }

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` atomically (readers never see a half-written file)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalResult":
        if data.get("format") != EVAL_FORMAT:
            raise ConfigError(f"not an atkit evaluation result (format {data.get('format')!r}, expected {EVAL_FORMAT!r}).")
        per_sample = {k: torch.tensor([c == "1" for c in v], dtype=torch.bool) for k, v in data["per_sample"].items()}
        return cls(
            accuracy={k: float(v) for k, v in data["accuracy"].items()},
            per_sample=per_sample,
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
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------------- evaluation
def evaluate(
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
    sanity: bool | Mapping[str, Any] = False,
) -> EvalResult:
    """Accuracy (percent) of ``model`` on images ``x`` in [0, 1] with labels ``y`` under each attack.

    ``threat``: ``None`` (L-inf, eps 8/255, step 2/255), a dict or an object with ``norm``, ``eps``,
    ``step_size``. All work is batched by ``batch_size`` in fp32 on ``device`` (default: the
    model's). Prediction is ``predict_labels(logits, num_classes)``, ``num_classes`` defaulting to
    ``model.num_classes`` (else the logit width). ``protocol`` (dummy-class models only):
    ``"published"`` attacks the raw 2C logits (the default for such models), ``"adaptive"`` /
    ``"adaptive_max"`` attack the merged C-class model (logsumexp / max of each class and its
    dummy); accuracy is always by projected prediction of the raw logits. ``aa_state_dir``: where
    AutoAttack keeps resumable state files. ``seed``: each attack starts from ``torch.manual_seed(seed)``;
    the caller's RNG state, the model's train/eval mode and ``requires_grad`` flags are restored.
    ``sanity``: also run the gradient-masking checks of :func:`atkit.sanity.run_sanity_checks`
    (``True``, or a dict of its options, e.g. ``{"n": 200}``) into ``result.checks``; a failed
    check shows in ``result.warnings`` and in the "checks" column of :meth:`EvalResult.summary_row`.
    AutoAttack (``aa``, ``apgd``) on an adaptive protocol counts a point as broken by the same
    projected prediction that scores it. With eps = 0 AutoAttack returns the clean result at once.
    ``progress``: ``True`` shows each attack (images done, ETA) and its result, then each sanity check
    (:mod:`atkit.progress`, text under papermill); an :class:`atkit.progress.Phases` labels the lines
    and feeds a UI's status line.
    """
    phases = as_phases(progress, "evaluate")
    run = run_eval_attacks(model, x, y, attacks=attacks, threat=threat, batch_size=batch_size, device=device,
                           num_classes=num_classes, protocol=protocol, aa_state_dir=aa_state_dir, seed=seed,
                           progress=phases if phases is not None else False)
    if phases is not None and run.protocol is not None:
        phases = phases.child(f"[{run.protocol}]")
    result = EvalResult(accuracy=run.accuracy, per_sample=run.per_sample, n=run.n, threat=run.threat,
                        protocol=run.protocol, num_classes=run.num_classes, seed=int(seed), details=run.details,
                        attack_warnings=run.attack_warnings)
    _set_robust(result)
    if phases is not None:  # on the progress stream (stderr), never on stdout, which carries results
        if result.robust_metric is not None:
            phases.note(f"robust {result.robust_accuracy:.2f}% ({result.robust_metric}) behind Mean/NRR")
        for warning in run.attack_warnings:
            phases.note(f"AutoAttack warning: {warning}")
    if sanity:
        options = dict(sanity) if isinstance(sanity, Mapping) else {}
        began = time.time()
        result.checks = sanity_checks.run_sanity_checks(
            model, x, y, threat=run.threat, batch_size=batch_size, device=run.device, num_classes=run.num_classes,
            protocol=protocol, seed=seed, reference=run.per_sample,
            progress=phases.child("sanity") if phases is not None else False, **options)
        _print_checks(result.checks, began, phases)
    result.provenance = build_provenance(model=model, device=run.device, batch_size=batch_size, threat=run.threat,
                                         seed=int(seed), details=run.details, warnings=result.warnings)
    return result


def _print_checks(checks: Sequence[Mapping[str, Any]], began: float, progress: Any) -> None:
    """One progress line: the sanity checks' verdict and their seconds."""
    phases = as_phases(progress, "evaluate")
    if phases is not None:
        bad = [c["name"] for c in checks if not c["passed"]]
        phases.note(f"sanity checks {'passed' if not bad else 'FAILED: ' + ', '.join(bad)} "
                    f"({time.time() - began:.1f} s)")


def _set_robust(result: EvalResult) -> None:
    """Fill ``robust_attacks``, ``robust_accuracy``, ``robust_metric``, ``mean`` and ``nrr`` of ``result``
    from its per-sample results: the worst case over every robust attack that ran."""
    result.robust_attacks = robust_attacks(list(result.accuracy))
    flags = result.robust_per_sample()
    result.robust_metric = worst_case_name(result.robust_attacks)
    result.robust_accuracy = None if flags is None else 100.0 * int(flags.sum()) / result.n
    result.mean, result.nrr = trade_off_scores(result.accuracy.get("clean"), result.robust_accuracy)


def worst_case_over_protocols(results: Mapping[str, EvalResult]) -> EvalResult:
    """Per-sample worst case of one model's results under several DUCAT protocols: for each attack run
    under every protocol, a sample is correct only if it is correct under all of them (the published
    protocol can only over-report (DUCAT's adaptive attacks), so the headline is the worst case).
    ``protocol = "worst_case"``; ``details[attack]`` gives each protocol's accuracy; Mean and NRR
    follow from the worst-case accuracies (:func:`evaluate`). The results must share images and labels
    (same ``n``, same ``clean`` per sample).
    """
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
                        attack_warnings=warnings)
    _set_robust(result)
    if first.provenance is not None:  # what produced the protocols' numbers, the same for each
        result.provenance = {**first.provenance, "worst_case_of": [p for p, _ in items]}
    return result


def evaluate_dummy_protocols(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    worst_case: bool = True,
    sanity: bool | Mapping[str, Any] = False,
    **kwargs: Any,
) -> dict[str, EvalResult]:
    """The DUCAT evaluation protocols side by side, headed by their
    per-sample worst case: ``{"worst_case": ..., "published": ..., "adaptive": ..., "adaptive_max": ...}``.

    ``published`` (the papers' protocol: attacks on the raw 2C logits) and ``adaptive`` /
    ``adaptive_max`` (attacks on ``MergedDummyModel(model, how="logsumexp" / "max")``), every accuracy
    by projected prediction. ``worst_case`` (:func:`worst_case_over_protocols`, first in the dict,
    left out with ``worst_case=False`` or a single protocol) is the number to report: the published
    protocol over-reports by the gap to it. ``sanity``: the checks of :func:`atkit.sanity.run_sanity_checks`,
    run once (not per protocol) and attached to the worst case and the published result; their
    ``dummy_protocol`` check reads the protocols' results computed here. ``kwargs`` go to :func:`evaluate`.
    """
    if not getattr(model, "dummy_classes", False):
        raise ConfigError("evaluate_dummy_protocols needs a model with dummy_classes=True (2C outputs).")
    if "protocol" in kwargs:
        raise ConfigError("pass protocols=[...] to evaluate_dummy_protocols, not protocol=...")
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise unknown_name_error("evaluation protocol", protocol, PROTOCOLS)
    by_protocol = {protocol: evaluate(model, x, y, protocol=protocol, **kwargs) for protocol in protocols}
    out: dict[str, EvalResult] = {}
    if worst_case and len(by_protocol) > 1:
        out[WORST_CASE] = worst_case_over_protocols(by_protocol)
        phases = as_phases(kwargs.get("progress"), "evaluate")
        if phases is not None and out[WORST_CASE].robust_metric is not None:
            worst = out[WORST_CASE]
            phases.note(f"[{WORST_CASE}] " + ", ".join(f"{k} {v:.2f}%" for k, v in worst.accuracy.items())
                        + f"; robust {worst.robust_accuracy:.2f}% ({worst.robust_metric}) behind Mean/NRR")
    out.update(by_protocol)
    if sanity:
        options = dict(sanity) if isinstance(sanity, Mapping) else {}
        began = time.time()
        first = next(iter(by_protocol.values()))
        reference = by_protocol.get("published", first).per_sample
        checks = sanity_checks.run_sanity_checks(
            model, x, y, threat=first.threat, batch_size=kwargs.get("batch_size", 500), device=kwargs.get("device"),
            num_classes=first.num_classes, seed=kwargs.get("seed", 0), reference=reference,
            protocol_results=by_protocol, **options)
        _print_checks(checks, began, kwargs.get("progress"))
        for key in (WORST_CASE, "published"):
            if key in out:
                out[key].checks = checks
    return out


def dummy_protocols_record(by_protocol: Mapping[str, EvalResult]) -> dict[str, Any]:
    """JSON record of :func:`evaluate_dummy_protocols`: the worst case's :meth:`EvalResult.to_dict` at the
    top level (the headline), each protocol's under ``"protocols"`` and what each protocol is under
    ``"protocol_labels"`` (the published one is the papers' protocol)."""
    protocols = {p: r for p, r in by_protocol.items() if p != WORST_CASE}
    head = by_protocol.get(WORST_CASE) or next(iter(protocols.values()))
    record = head.to_dict()
    record["protocols"] = {p: r.to_dict() for p, r in protocols.items()}
    record["protocol_labels"] = {p: PROTOCOL_LABELS[p] for p in [head.protocol, *protocols] if p in PROTOCOL_LABELS}
    return record


def results_table(results: Mapping[str, EvalResult] | Sequence[EvalResult]) -> Any:
    """A pandas DataFrame with one :meth:`EvalResult.summary_row` per result (indexed by label), with
    the "checks" column showing failed sanity checks as ``"WARN: ..."``."""
    import pandas as pd  # why: heavy; only tables need it

    items = results.items() if isinstance(results, Mapping) else ((str(i), r) for i, r in enumerate(results))
    rows = [r.summary_row(label) for label, r in items]
    return pd.DataFrame(rows).set_index("model")


__all__ = ["ATTACK_NAMES", "CW_DEFAULT_STEPS", "EVAL_ATTACKS", "EvalResult", "PROTOCOLS", "PROTOCOL_LABELS",
           "WORST_CASE", "checks_summary", "dummy_protocols_record", "evaluate", "evaluate_dummy_protocols",
           "parse_eval_attack", "results_table", "robust_attacks", "trade_off_scores", "worst_case_name",
           "worst_case_over_protocols"]

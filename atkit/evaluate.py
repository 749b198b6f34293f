"""One evaluation entry point: clean and robust accuracy of a model under a list of attacks.

Attacks (docs/methods.md, common protocol, "evaluation attacks"):

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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .attacks import attack_mode, check_budget, fgsm, pgd, random_noise, run_autoattack
from .provenance import build_provenance
from .stats import accuracy_intervals, format_accuracy
from .progress import Phases, as_phases
from .utils import ConfigError, atomic_write_json, unknown_name_error

EVAL_FORMAT = "atkit-eval/1"
PROTOCOLS = ("published", "adaptive", "adaptive_max")
# The headline of a dummy-class model: per sample, correct only if correct under every protocol.
WORST_CASE = "worst_case"
PROTOCOL_LABELS = {
    WORST_CASE: "worst case over the protocols (headline)",
    "published": "published: the papers' protocol (attacks on the raw 2C logits)",
    "adaptive": "adaptive: attacks on the logsumexp-merged C logits",
    "adaptive_max": "adaptive: attacks on the max-merged C logits",
}
# Which merge of real and dummy logits each adaptive protocol attacks (DUCAT; docs/methods.md, DUCAT, adaptive protocol).
_PROTOCOL_MERGE = {"adaptive": "logsumexp", "adaptive_max": "max"}
ATTACK_NAMES = ("clean", "pgd10", "pgd20", "pgd100", "pgdN", "cw", "cwN", "aa", "apgd", "fgsm", "random")
CW_DEFAULT_STEPS = 30
_DEFAULT_THREATS = {
    "linf": {"eps": 8 / 255, "step_size": 2 / 255},
    "l2": {"eps": 128 / 255, "step_size": 32 / 255},
}


# ----------------------------------------------------------------------------------------- specs
def _parse_attack(name: str) -> dict[str, Any]:
    """Attack name -> what to run. Raises :class:`ConfigError` for an unknown name."""
    if not isinstance(name, str):
        raise ConfigError(f"attack names must be strings; got {name!r}. Accepted: {', '.join(ATTACK_NAMES)}.")
    if name in ("clean", "aa", "apgd", "fgsm", "random"):
        return {"kind": name}
    if name == "cw":
        return {"kind": "pgd", "loss": "cw", "steps": CW_DEFAULT_STEPS}
    match = re.fullmatch(r"(pgd|cw)([0-9]+)", name)
    if match and int(match.group(2)) >= 1 and not match.group(2).startswith("0"):
        return {"kind": "pgd", "loss": "ce" if match.group(1) == "pgd" else "cw", "steps": int(match.group(2))}
    raise unknown_name_error("evaluation attack", name, ATTACK_NAMES)


def _resolve_threat(threat: Any) -> dict[str, Any]:
    """``{norm, eps, step_size}`` from ``None`` (L-inf 8/255, 2/255), a dict, or a ThreatModel-like object."""
    if threat is None:
        raw: dict[str, Any] = {}
    elif isinstance(threat, Mapping):
        raw = dict(threat)
        unknown = set(raw) - {"norm", "eps", "step_size", "steps"}
        if unknown:
            raise unknown_name_error("threat key", sorted(unknown)[0], ("norm", "eps", "step_size", "steps"))
    else:
        raw = {k: getattr(threat, k) for k in ("norm", "eps", "step_size") if hasattr(threat, k)}
    norm = raw.get("norm", "linf")
    if norm not in _DEFAULT_THREATS:
        raise unknown_name_error("norm", norm, _DEFAULT_THREATS)
    out = {"norm": norm, **_DEFAULT_THREATS[norm]}
    for key in ("eps", "step_size"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    check_budget(out["eps"], out["step_size"], None, norm)  # before float(): the hint then says 8/255
    return {"norm": norm, "eps": float(out["eps"]), "step_size": float(out["step_size"])}


def robust_attacks(names: Sequence[str]) -> list[str]:
    """The robust attacks among ``names``, in their order: ``pgdN``, ``cw``/``cwN``, ``apgd``, ``aa``
    (``clean``, ``fgsm`` and ``random`` are not robust-accuracy attacks)."""
    return [n for n in names if n in ("aa", "apgd", "cw") or re.fullmatch(r"(pgd|cw)[0-9]+", n)]


def worst_case_name(attacks: Sequence[str]) -> Optional[str]:
    """``"aa"`` for one attack, ``"worst of pgd20, cw"`` for several, None for none."""
    if not attacks:
        return None
    return attacks[0] if len(attacks) == 1 else "worst of " + ", ".join(attacks)


def _trade_off(clean: Optional[float], robust: Optional[float]) -> tuple[Optional[float], Optional[float]]:
    """``Mean = (Clean + R)/2``, ``NRR = 2 Clean R/(Clean + R)``, percent (the papers' trade-off scores)."""
    if clean is None or robust is None:
        return None, None
    return (clean + robust) / 2.0, (2.0 * clean * robust / (clean + robust) if clean + robust > 0 else 0.0)


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
        from .sanity import checks_summary

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
def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_inputs(x: Tensor, y: Tensor, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"x must be (N, ...) and y (N,) with N >= 1; got {tuple(x.shape)} and {tuple(y.shape)}.")
    if not x.is_floating_point():
        raise ConfigError(f"x must be float images in [0, 1]; got dtype {x.dtype} (uint8 images: divide by 255).")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigError(f"x must lie in [0, 1] (normalization belongs inside the model); got range [{lo:.3g}, {hi:.3g}].")


def _attack_batch(spec: dict[str, Any], model: nn.Module, xb: Tensor, yb: Tensor, threat: dict[str, Any]) -> Tensor:
    kind = spec["kind"]
    if kind == "pgd":
        return pgd(model, xb, yb, eps=threat["eps"], step_size=threat["step_size"], steps=spec["steps"],
                   norm=threat["norm"], loss=spec["loss"], random_start="uniform", bn_mode="eval")
    if kind == "fgsm":
        return fgsm(model, xb, yb, eps=threat["eps"], norm=threat["norm"], bn_mode="eval")
    if kind == "random":
        return random_noise(xb, eps=threat["eps"], norm=threat["norm"])
    return xb


def _spec_details(spec: dict[str, Any], threat: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    if kind == "pgd":
        return {"attack": "pgd", "loss": spec["loss"], "steps": spec["steps"], "step_size": threat["step_size"],
                "random_start": "uniform", "bn_mode": "eval"}
    if kind == "fgsm":
        return {"attack": "fgsm", "step_size": threat["eps"]}
    if kind == "aa":
        return {"attack": "autoattack", "version": "standard"}
    if kind == "apgd":
        return {"attack": "autoattack", "version": "custom", "attacks": ["apgd-ce", "apgd-dlr"], "n_restarts": 1}
    return {"attack": kind}


def _protocol_models(model: nn.Module, protocol: Optional[str]) -> tuple[nn.Module, Optional[str]]:
    """The model the attacks see. Scoring always uses the given model's own (projected) prediction."""
    dummy = bool(getattr(model, "dummy_classes", False))
    if protocol is None:
        return model, ("published" if dummy else None)
    if protocol not in PROTOCOLS:
        raise unknown_name_error("evaluation protocol", protocol, PROTOCOLS)
    if not dummy:
        raise ConfigError(f"protocol={protocol!r} is for DUCAT models with dummy classes (2C outputs); "
                          "this model has none, use protocol=None.")
    if protocol == "published":
        return model, protocol
    from .models import MergedDummyModel  # lazy: evaluate works without the model zoo loaded

    merged = MergedDummyModel(model, how=_PROTOCOL_MERGE[protocol])
    # A new module starts in train mode; an attack that restores the wrapper's mode on exit would then put the
    # wrapped model (its submodule) in train mode, and the next forward would update its BatchNorm statistics.
    merged.train(model.training)
    return merged, protocol


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
    specs = {}
    for name in attacks:
        if name in specs:
            raise ConfigError(f"attack {name!r} is listed twice in {list(attacks)}.")
        specs[name] = _parse_attack(name)
    if not specs:
        raise ConfigError(f"attacks must name at least one of {', '.join(ATTACK_NAMES)}.")
    thr = _resolve_threat(threat)
    _check_inputs(x, y, batch_size)
    from .models import predict_labels

    dev = _model_device(model) if device is None else torch.device(device)
    y_cpu = y.detach().to("cpu", torch.long)
    n = x.shape[0]
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    accuracy: dict[str, float] = {}
    per_sample: dict[str, Tensor] = {}
    details: dict[str, dict[str, Any]] = {}
    attack_warnings: list[str] = []
    phases = as_phases(progress, "evaluate")

    with attack_mode(model, "eval"), torch.random.fork_rng(devices=fork_devices):
        attack_model, protocol_used = _protocol_models(model, protocol)
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
            info = _spec_details(spec, thr)
            correct = torch.zeros(n, dtype=torch.bool)
            if spec["kind"] in ("aa", "apgd"):
                state_path = None
                if aa_state_dir is not None:
                    suffix = "" if protocol_used is None else f"_{protocol_used}"
                    state_path = Path(aa_state_dir) / f"{name}{suffix}.json"
                kw: dict[str, Any] = ({"version": "standard"} if spec["kind"] == "aa" else
                                      {"version": "custom", "attacks": ["apgd-ce", "apgd-dlr"], "n_restarts": 1})
                # On a merged view, "broken" is decided by the projected prediction that scores the point.
                result = run_autoattack(attack_model, x, y, eps=thr["eps"], norm=thr["norm"], batch_size=batch_size,
                                        state_path=state_path, seed=seed, device=dev, num_classes=num_classes,
                                        score_model=None if attack_model is model else model, on_batch=bar.sub,
                                        **kw)
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

    result = EvalResult(accuracy=accuracy, per_sample=per_sample, n=n, threat=thr, protocol=protocol_used,
                        num_classes=num_classes, seed=int(seed), details=details, attack_warnings=attack_warnings)
    _set_robust(result)
    if phases is not None:  # on the progress stream (stderr), never on stdout, which carries results
        if result.robust_metric is not None:
            phases.note(f"robust {result.robust_accuracy:.2f}% ({result.robust_metric}) behind Mean/NRR")
        for warning in attack_warnings:
            phases.note(f"AutoAttack warning: {warning}")
    checks = None
    if sanity:
        from .sanity import run_sanity_checks

        options = dict(sanity) if isinstance(sanity, Mapping) else {}
        began = time.time()
        checks = run_sanity_checks(model, x, y, threat=thr, batch_size=batch_size, device=dev,
                                   num_classes=num_classes, protocol=protocol, seed=seed, reference=per_sample,
                                   progress=phases.child("sanity") if phases is not None else False, **options)
        if phases is not None:
            bad = [c["name"] for c in checks if not c["passed"]]
            phases.note(f"sanity checks {'passed' if not bad else 'FAILED: ' + ', '.join(bad)} "
                        f"({time.time() - began:.1f} s)")
    result.checks = checks
    result.provenance = build_provenance(model=model, device=dev, batch_size=batch_size, threat=thr, seed=int(seed),
                                         details=details, warnings=result.warnings)
    return result


def _print_checks(checks: Sequence[Mapping[str, Any]], began: float, progress: Any) -> None:
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
    result.mean, result.nrr = _trade_off(result.accuracy.get("clean"), result.robust_accuracy)


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
        from .sanity import run_sanity_checks

        options = dict(sanity) if isinstance(sanity, Mapping) else {}
        began = time.time()
        first = next(iter(by_protocol.values()))
        reference = by_protocol.get("published", first).per_sample
        checks = run_sanity_checks(model, x, y, threat=first.threat, batch_size=kwargs.get("batch_size", 500),
                                   device=kwargs.get("device"), num_classes=first.num_classes,
                                   seed=kwargs.get("seed", 0), reference=reference, protocol_results=by_protocol,
                                   **options)
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
    import pandas as pd

    items = results.items() if isinstance(results, Mapping) else ((str(i), r) for i, r in enumerate(results))
    rows = [r.summary_row(label) for label, r in items]
    return pd.DataFrame(rows).set_index("model")


__all__ = ["ATTACK_NAMES", "EvalResult", "PROTOCOLS", "PROTOCOL_LABELS", "WORST_CASE", "dummy_protocols_record",
           "evaluate", "evaluate_dummy_protocols", "results_table", "robust_attacks", "worst_case_name",
           "worst_case_over_protocols"]

"""Gradient-masking sanity checks beside every robust number (:mod:`.checks` says what each one tests).

:func:`run_sanity_checks` runs the checks on the first ``n`` images of an evaluation, with the evaluation's
setup; :func:`atkit.evaluation.evaluate` calls it with ``sanity=True``. May import :mod:`atkit.evaluation`'s
runner, setup, attack and target modules, and core; nothing above evaluation.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ...core.progress import Phases, as_phases
from ...core.utils import ConfigError, unknown_name_error
from ..attack import parse_attacks, strongest
from ..runner import run_attacks
from ..setup import EvalSetup
from .checks import (DEFAULT_MIN_DROP, _NOT_WHITE_BOX, check_black_box, check_dummy_protocol,
                     check_large_eps, check_monotone_eps, check_monotone_steps, check_randomness, check_zero_gradients,
                     default_tolerance)
from .report import CHECK_LABELS, CHECK_NAMES, checks_summary, failed_checks


def run_sanity_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    setup: Optional[EvalSetup] = None,
    *,
    checks: Sequence[str] = CHECK_NAMES,
    n: Optional[int] = 500,
    steps_attacks: Sequence[str] = ("fgsm", "pgd10", "pgd20", "pgd50"),
    eps_factors: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    eps_steps: int = 20,
    large_eps: Optional[float] = None,
    large_eps_steps: int = 50,
    large_eps_max_accuracy: float = 5.0,
    square_n: int = 100,
    square_queries: int = 300,
    max_zero_gradient_fraction: float = 0.0,
    dummy_attack: Optional[str] = None,
    min_drop: float = DEFAULT_MIN_DROP,
    tolerance_samples: Optional[int] = None,
    reference: Optional[Mapping[str, Tensor]] = None,
    protocol_results: Optional[Mapping[str, Any]] = None,
    protocol: Optional[str] = None,
    progress: bool | Phases = False,
    **setup_options: Any,
) -> list[dict[str, Any]]:
    """Run the ``checks`` (names in :data:`CHECK_NAMES`) on the first ``n`` images (all if None).

    ``setup``: the evaluation's :class:`EvalSetup` (or its options as keywords: ``threat``, ``batch_size``,
    ``device``, ``num_classes``, ``seed``). Square runs on the first ``square_n`` images with ``square_queries``
    queries; its white-box reference is every white-box attack run here plus ``reference`` (per-image correctness
    on the full ``x`` from the main evaluation; ``aa``, which contains Square, is left out) plus a CW attack
    when no margin-loss attack is among them. ``dummy_protocol`` runs only for models with dummy classes, on
    ``dummy_attack`` (default: the strongest margin attack in ``reference`` / ``protocol_results``, else ``cw``);
    ``protocol_results`` (protocol -> result on the full ``x``) are used instead of re-running the attack.
    ``min_drop``: see :func:`check_monotone_eps`. The model's mode, parameter flags and the caller's RNG state
    are restored. Returns one dict per check. ``progress``: ``True`` or an :class:`atkit.core.progress.Phases`.
    """
    for name in checks:
        if name not in CHECK_NAMES:
            raise unknown_name_error("sanity check", name, CHECK_NAMES)
    for key, value in (("n", n), ("square_n", square_n), ("square_queries", square_queries)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    if setup is None:
        setup = EvalSetup.resolve(**setup_options)
    elif setup_options:
        raise ConfigError(f"give the evaluation setup once: setup=... or {', '.join(sorted(setup_options))}, not both")
    dev = setup.resolved_device(model)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):  # a randomized model draws noise in every check
        return _run_checks(model, x, y, setup, checks=checks, n=n, steps_attacks=steps_attacks,
                           eps_factors=eps_factors, eps_steps=eps_steps, large_eps=large_eps,
                           large_eps_steps=large_eps_steps, large_eps_max_accuracy=large_eps_max_accuracy,
                           square_n=square_n, square_queries=square_queries,
                           max_zero_gradient_fraction=max_zero_gradient_fraction, dummy_attack=dummy_attack,
                           min_drop=min_drop, tolerance_samples=tolerance_samples, reference=reference,
                           protocol_results=protocol_results, protocol=protocol,
                           phases=as_phases(progress, "sanity"))


def _run_checks(model: nn.Module, x: Tensor, y: Tensor, setup: EvalSetup, *, checks: Sequence[str],
                n: Optional[int], steps_attacks: Sequence[str], eps_factors: Sequence[float], eps_steps: int,
                large_eps: Optional[float], large_eps_steps: int, large_eps_max_accuracy: float, square_n: int,
                square_queries: int, max_zero_gradient_fraction: float, dummy_attack: Optional[str], min_drop: float,
                tolerance_samples: Optional[int], reference: Optional[Mapping[str, Tensor]],
                protocol_results: Optional[Mapping[str, Any]], protocol: Optional[str],
                phases: Optional[Phases] = None) -> list[dict[str, Any]]:
    total = x.shape[0]
    m = total if n is None else min(n, total)
    xs, ys = x[:m], y[:m]
    white_box: dict[str, Tensor] = {}
    results: list[dict[str, Any]] = []
    # Progress plumbing only (no effect on any check): announce each check, time it, report its verdict.
    dummy = getattr(model, "dummy_classes", False)
    planned = [c for c in CHECK_NAMES if c in checks and (c != "dummy_protocol" or dummy)]
    clock = {"began": time.time()}

    def begin(name: str) -> Optional[Phases]:
        """The check's start; returns where its attacks report progress."""
        clock["began"] = time.time()
        if phases is None:
            return None
        phases.status(f"{phases.label} {name} (check {planned.index(name) + 1}/{len(planned)}) ...")
        return phases.child(name)

    def keep(check: dict[str, Any]) -> None:
        for name, flags in (check.pop("_per_sample", None) or {}).items():
            if name not in _NOT_WHITE_BOX:
                white_box[name] = flags
        results.append(check)
        if phases is not None:
            phases.note(f"{check['name']} (check {len(results)}/{len(planned)}): "
                        f"{'passed' if check['passed'] else 'FAILED'} ({time.time() - clock['began']:.1f} s)")

    common = dict(protocol=protocol, tolerance_samples=tolerance_samples)
    if "monotone_steps" in checks:
        shown = begin("monotone_steps")
        keep(check_monotone_steps(model, xs, ys, setup, attacks=steps_attacks, phases=shown, **common))
    if "monotone_eps" in checks:
        shown = begin("monotone_eps")
        keep(check_monotone_eps(model, xs, ys, setup, steps=eps_steps, factors=eps_factors, min_drop=min_drop,
                                phases=shown, **common))
    if "large_eps" in checks:
        shown = begin("large_eps")
        keep(check_large_eps(model, xs, ys, setup, eps=large_eps, steps=large_eps_steps,
                             max_accuracy=large_eps_max_accuracy, phases=shown, **common))
    if "black_box" in checks:
        shown = begin("black_box")
        k = min(square_n, m)
        wb = {name: flags[:k] for name, flags in white_box.items()}
        for name, flags in (reference or {}).items():
            if name not in _NOT_WHITE_BOX and name not in wb and flags.shape[0] == total:
                wb[name] = flags[:k]
        if not wb:  # nothing ran yet: a PGD reference of our own (check_black_box adds CW to it)
            wb = dict(run_attacks(model, xs[:k], ys[:k], parse_attacks(["pgd20"]), setup, protocol=protocol,
                                  phases=shown).per_sample)
        keep(check_black_box(model, xs[:k], ys[:k], setup, n_queries=square_queries, white_box=wb, phases=shown,
                             **common))
    if "zero_gradients" in checks:
        begin("zero_gradients")
        keep(check_zero_gradients(model, xs, ys, setup, protocol=protocol, max_fraction=max_zero_gradient_fraction))
    if "randomness" in checks:
        begin("randomness")
        keep(check_randomness(model, xs, ys, setup, protocol=protocol))
    if "dummy_protocol" in checks and dummy:
        ran = list(reference or {}) + [a for r in (protocol_results or {}).values() for a in r.accuracy]
        attack = dummy_attack or strongest(ran, margin_only=True) or "cw"
        full = protocol_results if protocol_results and all(
            r.n == total for r in protocol_results.values()) else None
        shown = begin("dummy_protocol")
        keep(check_dummy_protocol(model, xs, ys, setup, attack=attack, results=full,
                                  tolerance_samples=tolerance_samples, phases=shown))
    return results


__all__ = ["CHECK_LABELS", "CHECK_NAMES", "DEFAULT_MIN_DROP", "check_black_box", "check_dummy_protocol",
           "check_large_eps", "check_monotone_eps", "check_monotone_steps", "check_randomness", "check_zero_gradients",
           "checks_summary", "default_tolerance", "failed_checks", "run_sanity_checks"]

from ..._moved import gone_names  # noqa: E402

__getattr__ = gone_names(__name__)

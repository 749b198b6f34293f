"""AutoAttack (Croce & Hein, ICML 2020) through the official implementation (``pyautoattack``).

The attacks themselves -- APGD-CE, APGD-DLR, APGD-T, FAB, FAB-T, Square -- are the official objects,
configured by ``pyautoattack.AutoAttack`` for the chosen version (docs/methods.md, common protocol: "AutoAttack
``standard`` with the official code"). atkit only drives them, for two reasons:

* ``pyautoattack`` 0.2.0 cannot resume from its own state file: it writes the attack set with
  ``str()`` (``"{'apgd-ce'}"``), so on reload the set never matches and it raises, and its resume
  branch returns a variable it never defines. The driver here keeps its own JSON state (written
  atomically after every batch) plus the adversarial images found so far, so an interrupted
  evaluation resumes to exactly the result of an uninterrupted one.
* Accuracy is recomputed by atkit from the returned ``x_adv`` with
  :func:`atkit.models.predict_labels`, so a DUCAT dummy-class model is scored by its projected
  prediction (docs/methods.md, published protocol).

The driving logic is AutoAttack's: the attacks run in order, each only on the points every
earlier attack failed to break, each call of an attack is seeded with ``seed``, and a point counts
as broken once any attack finds an example. "Broken" is ``argmax != y`` of the model it is given, as in the
official code; :mod:`atkit.evaluation` hands it the scored view of a dummy-class model
(:class:`atkit.evaluation.target.ScoredView`), whose argmax is the prediction that scores the point, so the
official attacks' own bookkeeping, inside each call as well as between calls, follows the score. The loop runs
under ``torch.no_grad()`` as pyautoattack's own driver does (the attacks enable gradients where they need them).

AutoAttack's own warnings (randomized or dynamic model, zero gradients, Square beating the gradient
attacks, ...) are kept in :attr:`AutoAttackResult.warnings` besides going to the ``atkit.autoattack``
logger.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..attacks.mode import attack_mode
from ..attacks.pgd import check_budget
from ..core.provenance import autoattack_budget
from ..core.utils import (ConfigError, atomic_torch_save, atomic_write_json, check_choice, model_device,
                          unknown_name_error)

logger = logging.getLogger("atkit.autoattack")

AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
AA_VERSIONS = ("standard", "custom")
# AutoAttack's own spelling of the norms.
AA_NORM_NAMES = {"linf": "Linf", "l2": "L2"}
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
_STATE_FORMAT = "atkit-autoattack-state/1"
# Logit counts each attack needs: DLR uses the 3rd largest logit, targeted DLR the 4th.
_MIN_OUTPUTS = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "fab": 2, "fab-t": 2, "square": 2}
# AutoAttack's standard number of target classes for APGD-T / FAB-T.
_DEFAULT_TARGETS = 9


@dataclass
class AutoAttackResult:
    """Outcome of :func:`run_autoattack`.

    ``x_adv``: adversarial images (the clean image where no attack succeeded), on ``x``'s device.
    ``correct``: bool ``(N,)`` on CPU, ``argmax(model(x_adv)) == y`` (the scored prediction).
    ``accuracy``: robust accuracy in percent (mean of ``correct``).
    ``per_attack``: AutoAttack's own running count in percent, ``{"clean": .., attack: ..}``, each
    entry the accuracy left after that attack (``argmax == y`` of the model it was given).
    ``attacks``: the attacks in the order run; ``ran_now``: those that did work in this call (empty
    when a finished state was reloaded); ``resumed``: a state file was found and continued.
    ``config``: everything that defines the run (eps, norm, version, overrides, ...).
    ``warnings``: AutoAttack's own warnings, each once, prefixed by where it came from
    (``"checks: ..."``, ``"apgd-ce: ..."``); kept in the state file across a resume.
    """

    x_adv: Tensor
    correct: Tensor
    accuracy: float
    per_attack: dict[str, float]
    attacks: list[str]
    ran_now: list[str] = field(default_factory=list)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # per stage, read from the AutoAttack object (provenance)
    warnings: list[str] = field(default_factory=list)


class _WarningRecorder:
    """Logger for the official attacks and checks: forwards to :data:`logger` and keeps each warning
    once (in order of first appearance), prefixed by ``stage`` (the check or attack running)."""

    def __init__(self, previous: Optional[list[str]] = None) -> None:
        self.messages: list[str] = list(previous or [])
        self.stage = "checks"

    def warning(self, msg: Any, *args: Any) -> None:
        text = f"{self.stage}: {msg % args if args else msg}"
        logger.warning(text)
        if text not in self.messages:
            self.messages.append(text)

    def info(self, msg: Any, *args: Any) -> None:
        logger.info(msg, *args)

    def debug(self, msg: Any, *args: Any) -> None:
        logger.debug(msg, *args)


def _flags_to_str(flags: Tensor) -> str:
    return "".join("1" if bool(v) else "0" for v in flags.tolist())


def _str_to_flags(text: str) -> Tensor:
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)


def _fingerprint(x: Tensor, y: Tensor) -> str:
    """Hash of the evaluated data, so a state file is never continued on different images."""
    digest = hashlib.sha256()
    digest.update(str(tuple(x.shape)).encode())
    digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's parameters and buffers: a state file belongs to one checkpoint."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _resolve_attacks(version: str, attacks: Optional[Sequence[str]]) -> list[str]:
    check_choice("AutoAttack version", version, AA_VERSIONS)
    if version == "standard":
        if attacks is not None:
            raise ConfigError(
                "attacks=... is only used with version='custom'; version='standard' always runs "
                f"{list(STANDARD_ATTACKS)}."
            )
        return list(STANDARD_ATTACKS)
    if attacks is None or isinstance(attacks, str) or len(attacks) == 0:
        raise ConfigError(
            f"version='custom' needs a non-empty list of attacks from {list(AA_ATTACKS)}; got {attacks!r}."
        )
    out: list[str] = []
    for name in attacks:
        if name not in AA_ATTACKS:
            raise unknown_name_error("AutoAttack attack", name, AA_ATTACKS)
        if name in out:
            raise ConfigError(f"AutoAttack attack {name!r} is listed twice in {list(attacks)}.")
        out.append(name)
    return out


def _check_positive_int(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name}={value!r} must be a positive integer (or None for AutoAttack's default).")


def _build_autoattack(model: nn.Module, cfg: dict[str, Any], num_outputs: int, device: torch.device,
                      recorder: _WarningRecorder) -> Any:
    from pyautoattack import AutoAttack  # why: pyautoattack is heavy; only an AutoAttack run needs it

    version = cfg["version"]
    aa = AutoAttack(
        model,
        norm=AA_NORM_NAMES[cfg["norm"]],
        eps=cfg["eps"],
        version=version,
        attacks=cfg["attacks"] if version == "custom" else None,
        device=device,
        seed=cfg["seed"],
    )
    # Route AutoAttack's warnings (zero gradients, ...) to the recorder (and atkit's logger); its
    # progress lines go to debug and are silent unless a handler asks for them.
    aa.logger = recorder
    aa.apgd.logger = recorder
    aa.apgd_targeted.logger = recorder
    aa.verbose = False
    # The standard 9 target classes need >= 10 outputs; with fewer, target every other class.
    targets = min(_DEFAULT_TARGETS, num_outputs - 1)
    aa.apgd_targeted.n_target_classes = targets
    aa.fab.n_target_classes = targets
    if cfg["n_iter"] is not None:
        for attack in (aa.apgd, aa.apgd_targeted):
            attack.n_iter = cfg["n_iter"]
            attack.n_iter_orig = cfg["n_iter"]
            attack.n_iter_2 = max(int(0.22 * cfg["n_iter"]), 1)
            attack.n_iter_min = max(int(0.06 * cfg["n_iter"]), 1)
            attack.size_decr = max(int(0.03 * cfg["n_iter"]), 1)
        aa.fab.n_iter = cfg["n_iter"]
    if cfg["n_restarts"] is not None:
        aa.apgd.n_restarts = cfg["n_restarts"]
        aa.apgd_targeted.n_restarts = cfg["n_restarts"]
        aa.fab.n_restarts = cfg["n_restarts"]
    if cfg["square_queries"] is not None:
        aa.square.n_queries = cfg["square_queries"]
    return aa


def _perturb(aa: Any, attack: str, x: Tensor, y: Tensor, restarts_overridden: bool) -> Tensor:
    """One call of an official attack on a batch, set up as ``AutoAttack.run_standard_evaluation`` does."""
    seed = aa.get_seed()
    if attack in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = "ce" if attack == "apgd-ce" else "dlr"
        aa.apgd.seed = seed
        return aa.apgd.perturb(x, y)
    if attack == "apgd-t":
        aa.apgd_targeted.seed = seed
        return aa.apgd_targeted.perturb(x, y)
    if attack in ("fab", "fab-t"):
        aa.fab.targeted = attack == "fab-t"
        if attack == "fab-t" and not restarts_overridden:
            aa.fab.n_restarts = 1  # AutoAttack runs FAB-T with a single restart per target
        aa.fab.seed = seed
        return aa.fab.perturb(x, y)
    aa.square.seed = seed
    return aa.square.perturb(x, y)


def _run_checks(aa: Any, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, attacks: list[str],
                num_outputs: int, recorder: _WarningRecorder) -> None:
    """AutoAttack's sanity checks (randomized / probability outputs / dynamic defences / class count)."""
    from pyautoattack import checks  # why: heavy, as above

    recorder.stage = "checks"
    checks.check_randomized(model, x, y, bs=batch_size, logger=recorder)
    checks.check_range_output(model, x, logger=recorder)
    # check_dynamic traces one forward with sys.settrace and then clears the tracer, which would
    # switch off a debugger or coverage tool; its call counters are module globals that never reset.
    previous_tracer = sys.gettrace()
    for key in checks.funcs:
        checks.funcs[key] = 0
    try:
        checks.check_dynamic(model, x, False, logger=recorder)
    finally:
        sys.settrace(previous_tracer)
    checks.check_n_classes(num_outputs, attacks, aa.apgd_targeted.n_target_classes,
                           aa.fab.n_target_classes, logger=recorder)


class _OtherBatching(ConfigError):
    """A state file of the same evaluation with another batch size: started over, never mixed."""


class _State:
    """Progress of one AutoAttack evaluation; saved as JSON plus a ``.xadv.pt`` file of the
    adversarial images found so far (images first, so the JSON never claims a break it cannot show)."""

    def __init__(self, path: Optional[Path], config: dict[str, Any], robust: Tensor, clean_pct: float) -> None:
        self.path = path
        self.config = config
        self.robust = robust  # bool (N,) CPU: not broken yet, raw argmax == y so far
        self.per_attack: dict[str, float] = {"clean": clean_pct}
        self.done: list[str] = []
        self.current: Optional[str] = None
        self.processed: list[int] = []  # indices the current attack has finished with
        self.found_index: list[int] = []
        self.found_x: list[Tensor] = []  # CPU tensors, one per found index
        self.warnings: list[str] = []  # AutoAttack's warnings from the attack batches done so far

    @property
    def x_path(self) -> Optional[Path]:
        return None if self.path is None else self.path.with_name(self.path.name + ".xadv.pt")

    def save(self, images_changed: bool) -> None:
        if self.path is None:
            return
        if images_changed:
            stacked = torch.stack(self.found_x) if self.found_x else torch.empty(0)
            atomic_torch_save({"index": torch.tensor(self.found_index, dtype=torch.long), "x_adv": stacked},
                              self.x_path)
        atomic_write_json(self.path, {
            "format": _STATE_FORMAT,
            "config": self.config,
            "robust": _flags_to_str(self.robust),
            "per_attack": self.per_attack,
            "done": self.done,
            "current": self.current,
            "processed": self.processed,
            "n_found": len(self.found_index),
            "warnings": self.warnings,
        })

    @classmethod
    def load(cls, path: Path, config: dict[str, Any]) -> "_State":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read AutoAttack state {str(path)!r}: {exc}") from exc
        if data.get("format") != _STATE_FORMAT:
            raise ConfigError(f"{str(path)!r} is not an atkit AutoAttack state file (format {data.get('format')!r}).")
        saved = data["config"]
        diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if diff and set(diff) <= {"batch_size"}:
            raise _OtherBatching(f"AutoAttack state {str(path)!r} was made with batch_size={saved.get('batch_size')!r}, "
                                 f"now {config['batch_size']}; the batching decides how seeded starts fall, so the "
                                 "evaluation starts over")
        if diff:
            detail = ", ".join(f"{k}: state {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ConfigError(
                f"AutoAttack state {str(path)!r} was made by a different evaluation ({detail}); "
                "use another state_path or delete the file to start over."
            )
        state = cls(path, config, _str_to_flags(data["robust"]), float("nan"))
        state.per_attack = {k: float(v) for k, v in data["per_attack"].items()}
        state.done = list(data["done"])
        state.current = data["current"]
        state.processed = [int(i) for i in data["processed"]]
        state.warnings = [str(w) for w in data.get("warnings", [])]
        if data["n_found"]:
            x_path = state.x_path
            try:
                stored = torch.load(x_path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as exc:
                raise ConfigError(f"AutoAttack state {str(path)!r} lists adversarial images but "
                                  f"{str(x_path)!r} cannot be read: {exc}") from exc
            index = stored["index"].tolist()
            if len(index) < data["n_found"]:
                raise ConfigError(f"{str(x_path)!r} holds fewer images than {str(path)!r} records.")
            # Images saved just before a crash that the JSON does not record yet are dropped: their
            # points are still marked robust and will be attacked again.
            state.found_index = index[: data["n_found"]]
            state.found_x = list(stored["x_adv"][: data["n_found"]])
        return state


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    attacks: Optional[Sequence[str]] = None,
    batch_size: int = 500,
    state_path: Optional[str | Path] = None,
    seed: int = 0,
    device: Optional[str | torch.device] = None,
    n_iter: Optional[int] = None,
    n_restarts: Optional[int] = None,
    square_queries: Optional[int] = None,
    on_batch: Optional[Callable[[str, int, int], None]] = None,
    on_stage: Optional[Callable[[str, int, dict[str, Any]], None]] = None,
) -> AutoAttackResult:
    """Run AutoAttack on ``(x, y)`` against ``model``, a point counting as broken when ``model``'s argmax is wrong.

    ``version="standard"``: APGD-CE, APGD-T, FAB-T, Square with the official settings (Croce & Hein
    2020); ``"custom"``: the listed ``attacks`` (names in :data:`AA_ATTACKS`) with AutoAttack's
    constructor defaults (5 restarts for APGD/FAB). APGD-T and FAB-T target
    ``min(9, outputs - 1)`` classes. ``n_iter`` / ``n_restarts`` / ``square_queries`` override
    the official budgets (cheap smoke runs; the result is then not "AutoAttack standard"), and
    are recorded in ``config``.

    ``model`` is what the attacks see and what decides "broken" (for a dummy-class model, the scored view of
    :mod:`atkit.evaluation.target`); it runs in eval mode with frozen parameters (:func:`attack_mode`),
    restored afterwards, and the caller's RNG state is left untouched. ``correct``: ``argmax(model(x_adv)) == y``.
    ``state_path``: a JSON file, updated after every batch, from which an interrupted run continues
    (same data, model and settings required; the images found so far sit next to it in
    ``<state_path>.xadv.pt``). ``eps = 0`` returns the clean result at once, without running the attacks.
    ``on_batch(attack, done, total)`` is called after every batch (progress: images of this attack's
    still-robust set done so far); ``on_stage(attack, images, stage_budget)`` before each attack starts (its
    images and its budget from :func:`atkit.core.provenance.autoattack_budget`: what it will cost).
    """
    check_choice("norm", norm, AA_NORM_NAMES)
    check_budget(eps, None, None, norm)
    run_attacks = _resolve_attacks(version, attacks)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("n_iter", n_iter)
    _check_positive_int("n_restarts", n_restarts)
    _check_positive_int("square_queries", square_queries)
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"x must be (N, ...) and y (N,) with N >= 1; got {tuple(x.shape)} and {tuple(y.shape)}.")
    dev = model_device(model) if device is None else torch.device(device)
    state_file = None if state_path is None else Path(state_path)
    n = x.shape[0]
    y_cpu = y.detach().to("cpu", torch.long)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []

    # No autograd graph outside the attacks' own enable_grad blocks, as pyautoattack's driver runs them.
    with attack_mode(model, "eval"), torch.random.fork_rng(devices=fork_devices), torch.no_grad():
        num_outputs = model(x[:1].to(dev, torch.float32)).shape[1]

        def predicted(xb: Tensor) -> Tensor:
            return model(xb).argmax(1).cpu()

        def score(images: Tensor) -> Tensor:
            correct = torch.zeros(n, dtype=torch.bool)
            for start in range(0, n, batch_size):
                correct[start:start + batch_size] = (predicted(images[start:start + batch_size].to(dev, torch.float32))
                                                     == y_cpu[start:start + batch_size])
            return correct

        for name in run_attacks:
            if num_outputs < _MIN_OUTPUTS[name]:
                raise ConfigError(f"AutoAttack attack {name!r} needs at least {_MIN_OUTPUTS[name]} model "
                                  f"outputs; this model has {num_outputs}.")
        config: dict[str, Any] = {
            "eps": float(eps), "norm": norm, "version": version, "attacks": run_attacks, "seed": int(seed),
            "n_iter": n_iter, "n_restarts": n_restarts, "square_queries": square_queries, "n": int(n),
            "num_outputs": int(num_outputs), "batch_size": int(batch_size),
        }
        if eps == 0:
            # Nothing can move inside a ball of radius 0: every attack leaves the clean accuracy.
            correct = score(x)
            clean_pct = 100.0 * int(correct.sum()) / n
            return AutoAttackResult(x_adv=x.detach().clone(), correct=correct, accuracy=clean_pct,
                                    per_attack={"clean": clean_pct, **{a: clean_pct for a in run_attacks}},
                                    attacks=run_attacks, ran_now=[], resumed=False,
                                    config={**config, "skipped": "eps = 0: the clean result"})
        if state_file is not None:
            # Only needed to validate a resume; hashing is cheap next to any attack.
            config["data_sha256"] = _fingerprint(x, y)
            config["model_sha256"] = _model_fingerprint(model)
        resumed = state_file is not None and state_file.exists()
        if resumed:
            try:
                state = _State.load(state_file, config)
            except _OtherBatching as exc:
                logger.warning("%s", exc)
                resumed = False
        recorder = _WarningRecorder()
        aa = _build_autoattack(model, config, num_outputs, dev, recorder)
        _run_checks(aa, model, x[:batch_size].to(dev, torch.float32), y_cpu[:batch_size].to(dev),
                    batch_size, run_attacks, num_outputs, recorder)
        budget = autoattack_budget(aa, run_attacks, n_restarts is not None)

        if not resumed:
            robust = torch.zeros(n, dtype=torch.bool)
            for start in range(0, n, batch_size):
                xb = x[start:start + batch_size].to(dev, torch.float32)
                robust[start:start + batch_size] = predicted(xb) == y_cpu[start:start + batch_size]
            state = _State(state_file, config, robust, 100.0 * int(robust.sum()) / n)
            state.save(images_changed=True)
        check_messages = list(recorder.messages)
        recorder.messages = list(state.warnings)

        ran_now: list[str] = []
        began = time.time()
        for attack in run_attacks:
            if attack in state.done:
                continue
            if state.current != attack:
                state.current, state.processed = attack, []
            recorder.stage = attack
            todo = state.robust.clone()
            if state.processed:
                todo[torch.tensor(state.processed, dtype=torch.long)] = False
            todo_index = todo.nonzero().flatten()
            if len(todo_index):
                ran_now.append(attack)
                if on_stage is not None:
                    on_stage(attack, len(todo_index), dict(budget["stages"].get(attack, {})))
            for start in range(0, len(todo_index), batch_size):
                index = todo_index[start:start + batch_size]
                xb = x[index].to(dev, torch.float32)
                yb = y_cpu[index].to(dev)
                adv = _perturb(aa, attack, xb, yb, n_restarts is not None).detach()
                broken = predicted(adv) != yb.cpu()
                for i in broken.nonzero().flatten().tolist():
                    state.found_index.append(int(index[i]))
                    state.found_x.append(adv[i].to("cpu", torch.float32))
                state.robust[index[broken]] = False
                state.processed.extend(index.tolist())
                state.warnings = list(recorder.messages)
                state.save(images_changed=bool(broken.any()))
                if on_batch is not None:
                    on_batch(attack, min(start + batch_size, len(todo_index)), len(todo_index))
                logger.debug("%s: batch %d/%d, %d of %d broken (%.1f s)", attack, start // batch_size + 1,
                             (len(todo_index) + batch_size - 1) // batch_size, int(broken.sum()), len(index),
                             time.time() - began)
            state.per_attack[attack] = 100.0 * int(state.robust.sum()) / n
            state.done.append(attack)
            state.current, state.processed = None, []
            state.save(images_changed=False)
            logger.info("robust accuracy after %s: %.2f%%", attack, state.per_attack[attack])

        from pyautoattack import checks  # why: heavy, as above

        recorder.stage = "square check"
        checks.check_square_sr({k: v / 100.0 for k, v in state.per_attack.items()}, logger=recorder)

        x_adv = x.detach().clone()
        if state.found_index:
            x_adv[torch.tensor(state.found_index, dtype=torch.long)] = torch.stack(state.found_x).to(x_adv)
        correct = score(x_adv)
        warnings = check_messages + [w for w in recorder.messages if w not in check_messages]

    return AutoAttackResult(
        x_adv=x_adv,
        correct=correct,
        accuracy=100.0 * int(correct.sum()) / n,
        per_attack={k: state.per_attack[k] for k in ["clean", *run_attacks] if k in state.per_attack},
        attacks=run_attacks,
        ran_now=ran_now,
        resumed=resumed,
        config={k: v for k, v in config.items() if not k.endswith("_sha256")},
        budget=budget,
        warnings=warnings,
    )

from .._moved import gone_names  # noqa: E402

__getattr__ = gone_names(__name__)

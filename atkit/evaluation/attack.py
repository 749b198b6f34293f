"""What an evaluation attack is: the base class, its registry and the one grammar of attack names.

An evaluation attack is one file in :mod:`atkit.evaluation.attacks` holding one :class:`EvalAttack` subclass,
registered by name with :func:`register_eval_attack`, as a training method is (:mod:`atkit.methods`). The class
carries everything about the attack: its settings (a ``Params`` dataclass whose field metadata gives help,
ranges and choices), its defaults, its display name, whether it counts towards robust accuracy, how strong it
is when only accuracies are at hand, the formula and source in its docstring, and what it does
(:meth:`EvalAttack.perturb` on a batch, or :meth:`EvalAttack.run_whole` on all images at once). Tables, the
``results`` columns and the robust metric read the registry, so a new file is a new column everywhere.

Names (:func:`parse_attack`): a registered name (``clean``, ``cw``, ``aa``), the name followed by the number
its ``suffix`` setting takes (``pgd20``, ``cw50``), optionally followed by other settings in parentheses
(``aa(n_iter=20,n_restarts=1)``, ``pgd50(random_start=none)``), or a mapping ``{name: ..., setting: ...}``
as YAML writes it. Anything else is one line naming it and every accepted spelling.

Success is always decided by the prediction that is scored (:mod:`atkit.evaluation.target`): an attack that
keeps its own per-sample bookkeeping of which points are broken (AutoAttack's) sets ``scored_view`` and is
handed a view of the model whose argmax is that prediction.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Optional, Sequence

import yaml
from torch import Tensor

from ..core.params import build_params, describe_params, param_defaults
from ..core.registry import Registry
from ..core.utils import ConfigError, unknown_name_error

if TYPE_CHECKING:  # annotations only: target imports nothing from here at run time either
    from .target import AttackTarget

#: name -> :class:`EvalAttack` subclass, filled by :func:`register_eval_attack`.
EVAL_ATTACKS: Registry = Registry("evaluation attack")


@dataclass
class NoParams:
    """An attack without settings."""


@dataclass
class WholeSetRun:
    """What :meth:`EvalAttack.run_whole` returns: the adversarial images (the clean image where nothing was
    found) and the attack's own record (budget, per-stage counts, resume state, warnings)."""

    x_adv: Tensor
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


class EvalAttack:
    """Base class of an evaluation attack (the module docstring). Subclasses set the class attributes below and
    implement :meth:`perturb` (or :meth:`run_whole` with ``whole_set = True``)."""

    name: ClassVar[str] = ""
    #: Source of the algorithm, as methods cite theirs.
    paper: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    #: The setting a number after the name sets (``pgd20``: ``steps``); None: the name takes no number.
    suffix: ClassVar[Optional[str]] = None
    #: Whether the number must be given (``pgd`` alone is not an attack; ``cw`` means ``cw30``).
    suffix_required: ClassVar[bool] = False
    #: Whether it enters the per-sample worst case behind the robust accuracy, Mean and NRR.
    robust: ClassVar[bool] = True
    #: Rank among robust attacks when only accuracies are at hand (tables): higher is stronger.
    strength: ClassVar[float] = 0.0
    #: Whether its objective is a margin (CW, DLR) rather than the cross-entropy (the black-box check needs one).
    margin: ClassVar[bool] = False
    #: Whether it is an attack on the model (everything but ``clean`` and random noise): an image it scores correct
    #: must also be correct unperturbed, since the clean image lies in the ball (so it never raises accuracy above
    #: clean).
    adversarial: ClassVar[bool] = True
    #: Whether it runs on every image at once (AutoAttack: attack by attack, resumable) instead of batch by batch.
    whole_set: ClassVar[bool] = False
    #: Whether it keeps its own bookkeeping of broken points and so must see a view whose argmax is the scored
    #: prediction (module docstring); attacks that are scored only at the end see the protocol's model itself.
    scored_view: ClassVar[bool] = False
    #: Settings that make it cheap enough for the registry-wide contract test (tests/test_eval_attack_contract.py).
    smoke_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, **settings: Any) -> None:
        self.params = build_params(self.Params, settings, self.name or type(self).__name__, "evaluation attack")

    # -- what it is ------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def changed_settings(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        defaults = param_defaults(self.Params)
        return {k: v for k, v in self.settings().items() if v != defaults.get(k)}

    def label(self) -> str:
        """The canonical name: ``pgd20``, ``cw`` (default steps), ``aa(n_iter=20)``."""
        changed = self.changed_settings()
        head = self.name
        if self.suffix is not None and (self.suffix_required or self.suffix in changed):
            head += str(self.settings()[self.suffix])
            changed.pop(self.suffix, None)
        if changed:
            head += "(" + ",".join(f"{k}={_format_value(v)}" for k, v in sorted(changed.items())) + ")"
        return head

    def display_name(self) -> str:
        """How tables and figures title it (``PGD-20``); defaults to the label."""
        return self.label()

    def short_name(self) -> str:
        """The column heading of results tables (the papers' "AA", "CW"); defaults to :meth:`display_name`."""
        return self.display_name()

    def describe(self, threat: Mapping[str, Any]) -> dict[str, Any]:
        """Its full budget for provenance: the attack, every setting, the threat it ran under."""
        return {"attack": self.name, **self.settings(), "norm": threat.get("norm"), "eps": threat.get("eps")}

    def passes_per_image(self) -> Optional[tuple[int, int]]:
        """About how many (forward, backward) passes of the model it costs per image, for the plan printed before
        a long evaluation (None: negligible or unknown)."""
        return None

    def rank(self) -> tuple[float, float]:
        """Strength for :func:`strongest`: ``(strength, suffix value)``."""
        extra = self.settings().get(self.suffix) if self.suffix else 0
        return float(self.strength), float(extra or 0)

    # -- what it does ----------------------------------------------------------------------------------
    def perturb(self, target: "AttackTarget", x: Tensor, y: Tensor) -> Tensor:
        """Adversarial images for one batch ``x`` in [0, 1] with labels ``y`` (on the target's device)."""
        raise NotImplementedError(f"evaluation attack {self.name!r} defines neither perturb nor run_whole")

    def run_whole(self, target: "AttackTarget", x: Tensor, y: Tensor) -> WholeSetRun:
        """Adversarial images for every image at once (``whole_set`` attacks)."""
        raise NotImplementedError(f"evaluation attack {self.name!r} is not a whole-set attack")

    @classmethod
    def describe_class(cls) -> dict[str, Any]:
        return {"name": cls.name, "paper": cls.paper, "robust": cls.robust, "suffix": cls.suffix,
                "settings": describe_params(cls.Params),
                "doc": " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label()})"


def register_eval_attack(cls: type[EvalAttack]) -> type[EvalAttack]:
    """Class decorator: make an :class:`EvalAttack` subclass available under ``cls.name``."""
    if not cls.name or not re.fullmatch(r"[a-z][a-z_]*", cls.name):
        raise ValueError(f"{cls.__name__}.name={cls.name!r} must be lower-case letters and '_'")
    if cls.suffix is not None and cls.suffix not in {f.name for f in dataclasses.fields(cls.Params)}:
        raise ValueError(f"{cls.__name__}.suffix={cls.suffix!r} is not a field of its Params")
    return EVAL_ATTACKS.add(cls.name, cls)


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_NAME = re.compile(r"([a-z][a-z_]*?)([1-9][0-9]*)?(?:\((.*)\))?")


def accepted_spellings() -> list[str]:
    """Every accepted spelling, for messages: ``clean``, ``pgd10``, ``pgd20``, ``pgdN``, ``cw``, ``cwN``, ..."""
    names: list[str] = []
    for name in EVAL_ATTACKS:
        cls = EVAL_ATTACKS[name]
        if cls.suffix is None:
            names.append(name)
        elif cls.suffix_required:
            names += [f"{name}10", f"{name}20", f"{name}100", f"{name}N"]
        else:
            names += [name, f"{name}N"]
    return names + ["NAME(key=value)"]


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and parentheses: ``"a,b(c,d),e=[1,2]"`` -> ``a``, ``b(c,d)``, ``e=[1,2]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def _parse_settings(text: str, spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in _split_top_level(text):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"evaluation attack {spec!r}: settings in parentheses are key=value pairs, got {part!r}")
        try:
            parsed = yaml.safe_load(value.strip())
        except yaml.YAMLError:
            parsed = value.strip()
        out[key.strip()] = parsed
    return out


def parse_attack(spec: Any) -> EvalAttack:
    """An attack name (module docstring) or mapping -> the configured :class:`EvalAttack`. Anything else is a
    :class:`ConfigError` naming it and the accepted spellings."""
    if isinstance(spec, EvalAttack):
        return spec
    if isinstance(spec, Mapping):
        values = dict(spec)
        if len(values) == 1 and isinstance(next(iter(values.values())), Mapping):  # {aa: {n_iter: 20}}
            name, settings = next(iter(values.items()))
            values = {"name": name, **settings}
        name = values.pop("name", None)
        if name not in EVAL_ATTACKS:
            raise unknown_name_error("evaluation attack", name, list(EVAL_ATTACKS))
        return EVAL_ATTACKS[name](**values)
    if not isinstance(spec, str):
        raise ConfigError(f"attack names must be strings; got {spec!r}. Accepted: {', '.join(accepted_spellings())}.")
    match = _NAME.fullmatch(spec.strip())
    if match:
        family, number, inner = match.groups()
        cls = EVAL_ATTACKS.get(family) if family in EVAL_ATTACKS else None
        if cls is not None and (number is None or cls.suffix is not None) and not (number is None and cls.suffix_required):
            settings = _parse_settings(inner, spec) if inner is not None else {}
            if number is not None:
                settings[cls.suffix] = int(number)
            return cls(**settings)
    raise unknown_name_error("evaluation attack", spec, accepted_spellings())


def split_attack_list(text: str) -> list[str]:
    """``"clean,pgd20,aa(n_iter=20,n_restarts=1)"`` -> its names; commas inside parentheses stay with their name."""
    return _split_top_level(text)


def parse_attacks(specs: Sequence[Any]) -> dict[str, EvalAttack]:
    """``label -> attack`` for a list of names; empty, or the same attack twice, is a :class:`ConfigError`.
    The label is the name as written for strings (``cw30`` stays ``cw30``), the canonical one for mappings."""
    if isinstance(specs, (str, Mapping)):
        specs = [specs]
    out: dict[str, EvalAttack] = {}
    seen: dict[str, str] = {}
    for spec in specs:
        attack = parse_attack(spec)
        label = spec.strip() if isinstance(spec, str) else attack.label()
        canonical = attack.label()
        if canonical in seen:
            raise ConfigError(f"attack {label!r} is listed twice in {list(specs)} (as {seen[canonical]!r}).")
        seen[canonical] = label
        out[label] = attack
    if not out:
        raise ConfigError(f"attacks must name at least one of {', '.join(accepted_spellings())}.")
    return out


def _parsed(name: str) -> Optional[EvalAttack]:
    try:
        return parse_attack(name)
    except ConfigError:
        return None


def is_attack_name(name: Any) -> bool:
    """Whether ``name`` is an evaluation attack's name (a table column, a record key), without raising."""
    return isinstance(name, str) and _parsed(name) is not None


def robust_attacks(names: Iterable[str]) -> list[str]:
    """The names among ``names`` of attacks that count towards robust accuracy, in their order (``clean``,
    ``fgsm``, ``random`` do not; names that are not attacks, e.g. ``mean``, are skipped)."""
    return [n for n in names if (a := _parsed(n)) is not None and a.robust]


def is_margin_attack(name: str) -> bool:
    """Whether ``name`` optimises a margin (CW, DLR; APGD runs APGD-DLR), not the cross-entropy alone."""
    attack = _parsed(name)
    return attack is not None and attack.margin


def strongest(names: Iterable[str], *, margin_only: bool = False) -> Optional[str]:
    """The strongest robust attack among ``names`` by the registry's ranks (``aa``, then ``apgd``, then the
    PGD with most steps, ...); None if there is none. With per-sample results the robust accuracy is the
    worst case over :func:`robust_attacks` instead; this is for when only accuracies are at hand."""
    ranked = [(a.rank(), n) for n in names if (a := _parsed(n)) is not None and a.robust
              and (a.margin or not margin_only)]
    return max(ranked)[1] if ranked else None


def display_name(name: str, short: bool = False) -> str:
    """Title of an attack name for figures (``pgd20`` -> ``PGD-20``, ``aa`` -> ``AutoAttack``), or with ``short``
    the column heading of tables (``aa`` -> ``AA``); other names (``mean``) are returned as is."""
    attack = _parsed(name)
    if attack is None:
        return name
    return attack.short_name() if short else attack.display_name()


def default_spellings() -> list[str]:
    """Each registered attack's name at its defaults (``pgd`` at 10, 20 and 100 steps), in table order: the
    accuracy columns results tables always have."""
    names: list[str] = []
    for name, cls in EVAL_ATTACKS.items():
        if cls.suffix_required:
            names += [f"{name}{k}" for k in (10, 20, 100)]
        else:
            names.append(name)
    return attack_order(names)


def worst_case_name(attacks: Sequence[str]) -> Optional[str]:
    """``"aa"`` for one attack, ``"worst of pgd20, cw"`` for several, None for none."""
    if not attacks:
        return None
    return attacks[0] if len(attacks) == 1 else "worst of " + ", ".join(attacks)


def trade_off_scores(clean: Optional[float], robust: Optional[float]) -> tuple[Optional[float], Optional[float]]:
    """``(Mean, NRR)`` of a clean and a robust accuracy in percent: ``Mean = (Clean + R)/2``,
    ``NRR = 2 Clean R/(Clean + R)`` (docs/methods.md, common protocol); None when either is missing or NaN."""
    if clean is None or robust is None or clean != clean or robust != robust:
        return None, None
    return (clean + robust) / 2.0, (2.0 * clean * robust / (clean + robust) if clean + robust > 0 else 0.0)


def attack_order(names: Iterable[str]) -> list[str]:
    """``names`` in table order: the attacks that are not robust-accuracy attacks first (``clean``), then the
    robust ones from the weakest to the strongest by the registry's ranks; names that are not attacks last."""
    def key(name: str) -> tuple:
        attack = EVAL_ATTACKS[name]() if name in EVAL_ATTACKS else _parsed(name)  # a bare registry name too
        if attack is None:
            return (2, 0.0, 0.0, name)
        strength, extra = attack.rank()
        return (int(attack.robust), strength if attack.robust else float(attack.name != "clean"), extra, name)
    return sorted(names, key=key)


__all__ = ["EVAL_ATTACKS", "EvalAttack", "NoParams", "WholeSetRun", "accepted_spellings", "attack_order",
           "default_spellings", "display_name", "is_attack_name", "is_margin_attack", "parse_attack", "parse_attacks", "register_eval_attack", "split_attack_list",
           "robust_attacks", "strongest", "trade_off_scores", "worst_case_name"]

"""The threat model (perturbation set and attack budget) and its defaults: the one place they are defined.

Defaults (docs/methods.md, common protocol): L-inf eps 8/255 with step 2/255, L2 eps 128/255 with step
32/255, 10 steps for the training attack. :class:`ThreatModel` is what a run trains under
(``RunConfig.threat``); :func:`resolve_threat` is what an evaluation attacks under (``evaluate(threat=...)``,
the sanity checks): both take their defaults from :data:`THREAT_DEFAULTS`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.utils import ConfigError, check_field_types, unknown_name_error
from .pgd import check_budget

# norm -> the papers' budget (docs/methods.md, common protocol).
THREAT_DEFAULTS: dict[str, dict[str, Any]] = {
    "linf": {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10},
    "l2": {"eps": 128 / 255, "step_size": 32 / 255, "steps": 10},
}
THREAT_KEYS = ("norm", "eps", "step_size", "steps")


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set and the training attack's budget.

    Defaults are the L-inf setting of docs/methods.md, common protocol (eps 8/255, step 2/255, 10 steps);
    :meth:`l2` gives the L2 one (eps 128/255, step 32/255); both from :data:`THREAT_DEFAULTS`.
    """

    norm: str = "linf"
    eps: float = THREAT_DEFAULTS["linf"]["eps"]
    step_size: float = THREAT_DEFAULTS["linf"]["step_size"]
    steps: int = THREAT_DEFAULTS["linf"]["steps"]

    def __post_init__(self) -> None:
        check_budget(self.eps, self.step_size, self.steps, self.norm)

    @classmethod
    def linf(cls, eps: float = THREAT_DEFAULTS["linf"]["eps"], step_size: float = THREAT_DEFAULTS["linf"]["step_size"],
             steps: int = THREAT_DEFAULTS["linf"]["steps"]) -> "ThreatModel":
        return cls("linf", eps, step_size, steps)

    @classmethod
    def l2(cls, eps: float = THREAT_DEFAULTS["l2"]["eps"], step_size: float = THREAT_DEFAULTS["l2"]["step_size"],
           steps: int = THREAT_DEFAULTS["l2"]["steps"]) -> "ThreatModel":
        return cls("l2", eps, step_size, steps)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ThreatModel":
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"threat={d!r} must be a mapping such as {{norm: linf, eps: 0.0314, step_size: 0.0078, "
                              "steps: 10}")
        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise unknown_name_error("threat key", sorted(unknown)[0], [f.name for f in dataclasses.fields(cls)])
        check_field_types(cls, d, "threat.")
        norm = d.get("norm", "linf")
        base = cls.l2() if norm == "l2" else cls.linf()
        return dataclasses.replace(base, **d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_threat(threat: Any = None) -> dict[str, Any]:
    """``{norm, eps, step_size}`` an evaluation attacks under, from ``None`` (L-inf 8/255, step 2/255), a
    mapping (keys of :data:`THREAT_KEYS`; ``steps`` is the training attack's and ignored here) or a
    :class:`ThreatModel`-like object; what is not given comes from :data:`THREAT_DEFAULTS` of its norm.
    A bad key, norm or budget is a :class:`ConfigError`."""
    if threat is None:
        raw: dict[str, Any] = {}
    elif isinstance(threat, Mapping):
        raw = dict(threat)
        unknown = set(raw) - set(THREAT_KEYS)
        if unknown:
            raise unknown_name_error("threat key", sorted(unknown)[0], THREAT_KEYS)
    else:
        raw = {k: getattr(threat, k) for k in ("norm", "eps", "step_size") if hasattr(threat, k)}
    norm = raw.get("norm", "linf")
    if norm not in THREAT_DEFAULTS:
        raise unknown_name_error("norm", norm, THREAT_DEFAULTS)
    out = {"norm": norm, "eps": THREAT_DEFAULTS[norm]["eps"], "step_size": THREAT_DEFAULTS[norm]["step_size"]}
    for key in ("eps", "step_size"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    check_budget(out["eps"], out["step_size"], None, norm)  # before float(): the hint then says 8/255
    return {"norm": norm, "eps": float(out["eps"]), "step_size": float(out["step_size"])}


__all__ = ["THREAT_DEFAULTS", "THREAT_KEYS", "ThreatModel", "resolve_threat"]

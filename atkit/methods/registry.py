"""Methods registered by name."""
from __future__ import annotations

from typing import Any, Callable

from ..utils import unknown_name_error
from .base import Method, ThreatModel

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a :class:`Method` subclass available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


# Composite names such as "trades+rpat" are resolved by factories that add-on terms register.
COMPOSERS: dict[str, Callable[..., Method]] = {}


def get_method(name: str, threat: ThreatModel | dict | None = None, **hparams: Any) -> Method:
    """Build the method registered as ``name`` with hyperparameters ``hparams``.

    ``name`` may be ``base+addon`` where ``addon`` was registered in :data:`COMPOSERS`.
    Unknown names and hyperparameters raise :class:`atkit.utils.ConfigError`.
    """
    if isinstance(threat, dict) or threat is None:
        threat = ThreatModel.from_dict(threat)
    if "+" in name:
        base, addon = name.split("+", 1)
        if addon not in COMPOSERS:
            raise unknown_name_error("method add-on", addon, COMPOSERS)
        if base not in METHODS:
            raise unknown_name_error("method", base, METHODS)
        return COMPOSERS[addon](base, threat, **hparams)
    if name not in METHODS:
        raise unknown_name_error("method", name, list(METHODS) + [f"<base>+{a}" for a in COMPOSERS])
    return METHODS[name](threat, **hparams)


def method_names() -> list[str]:
    return sorted(METHODS)


def describe_methods() -> list[dict[str, Any]]:
    """Descriptions of the registered methods, then of the add-ons whose composer has a ``describe()``
    (entries marked ``"add_on": True``, named ``<base>+<add-on>``)."""
    methods = [METHODS[n].describe() for n in method_names()]
    return methods + [COMPOSERS[a].describe() for a in sorted(COMPOSERS) if hasattr(COMPOSERS[a], "describe")]

"""Methods and add-ons registered by name, both in :class:`atkit.core.registry.Registry` (one registration style)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..attacks import ThreatModel
from ..core.params import describe_params
from ..core.registry import Registry
from ..core.utils import ConfigError, unknown_name_error
from .base import Method

#: name -> :class:`Method` subclass, filled by :func:`register`.
METHODS: Registry = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a :class:`Method` subclass available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return METHODS.add(cls.name, cls)


@dataclass(frozen=True)
class Addon:
    """A term that composes with base methods under the name ``<base>+<name>`` (see :func:`register_addon`).

    Calling it as ``addon(base_name, threat, **hparams)`` builds the composite (the base's and the add-on's
    hyperparameters in one dict).
    """

    name: str
    compose: Callable[..., Method]
    paper: str
    Params: type
    accepts: Callable[[type[Method]], Optional[str]]

    def __call__(self, base: str, threat: ThreatModel, **hparams: Any) -> Method:
        return self.compose(base, threat, **hparams)

    def refusal(self, base: str) -> Optional[str]:
        """Why ``base`` cannot take this add-on (None: it can)."""
        return self.accepts(METHODS.get(base))

    def describe(self) -> dict[str, Any]:
        return {"name": f"<base>+{self.name}", "paper": self.paper, "add_on": True,
                "hyperparameters": describe_params(self.Params)}


#: add-on name -> :class:`Addon`, filled by :func:`register_addon`; composite names ``"<base>+<add-on>"``.
ADDONS: Registry = Registry("method add-on")
#: The earlier name of :data:`ADDONS` (the same object).
COMPOSERS = ADDONS


def _any_base(method_cls: type[Method]) -> Optional[str]:
    return None


def register_addon(name: str, *, paper: str, Params: type,
                   accepts: Callable[[type[Method]], Optional[str]] = _any_base) -> Callable[[Callable[..., Method]], Addon]:
    """Decorator registering ``compose(base_name, threat, **hparams) -> Method`` as the add-on ``name``.

    ``paper`` and ``Params`` (the add-on's own hyperparameter dataclass) describe it; ``accepts(base_cls)``
    returns None for a base it composes with, else the reason it does not (a sentence naming what is missing),
    which :func:`get_method` raises as a ConfigError before building anything.
    """

    def decorate(compose: Callable[..., Method]) -> Addon:
        return ADDONS.add(name, Addon(name, compose, paper, Params, accepts))

    return decorate


def get_method(name: str, threat: ThreatModel | dict | None = None, **hparams: Any) -> Method:
    """Build the method registered as ``name`` with hyperparameters ``hparams``.

    ``name`` may be ``base+addon`` where ``addon`` was registered with :func:`register_addon`.
    Unknown names and hyperparameters raise :class:`atkit.core.utils.ConfigError`.
    """
    if isinstance(threat, dict) or threat is None:
        threat = ThreatModel.from_dict(threat)
    if "+" in name:
        base, addon_name = name.split("+", 1)
        addon = ADDONS.get(addon_name)
        METHODS.get(base)
        refusal = addon.refusal(base)
        if refusal is not None:
            raise ConfigError(f"{name!r}: {refusal}; {addon_name!r} composes with "
                              f"{', '.join(bases_of(addon_name)) or '(none)'}.")
        return addon(base, threat, **hparams)
    if name not in METHODS:
        raise unknown_name_error("method", name, list(METHODS) + [f"<base>+{a}" for a in ADDONS])
    return METHODS[name](threat, **hparams)


def method_names() -> list[str]:
    return sorted(METHODS)


def bases_of(addon: str) -> list[str]:
    """The registered methods that add-on ``addon`` composes with, sorted."""
    return [base for base in method_names() if ADDONS.get(addon).refusal(base) is None]


def composite_names() -> list[str]:
    """Every valid ``<base>+<add-on>`` name, add-on by add-on."""
    return [f"{base}+{addon}" for addon in sorted(ADDONS) for base in bases_of(addon)]


def describe_methods() -> list[dict[str, Any]]:
    """Descriptions of the registered methods, then of the add-ons (entries marked ``"add_on": True``,
    named ``<base>+<add-on>``)."""
    return [METHODS[n].describe() for n in method_names()] + [ADDONS[a].describe() for a in sorted(ADDONS)]

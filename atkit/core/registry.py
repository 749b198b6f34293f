"""One registration style for everything atkit looks up by name (methods, models, datasets, eval attacks).

A :class:`Registry` is a ``dict`` from name to entry (a class or a factory) filled by a decorator, in the timm
habit::

    MODELS = Registry("model")

    @MODELS.register("small_cnn")
    def small_cnn(num_classes: int = 10, *, width: int = 32) -> SmallCNN: ...

    MODELS.get("small_cnn")        # the entry; an unknown name raises ConfigError naming the accepted ones
    MODELS.options("small_cnn")    # {"num_classes": 10, "width": 32}: read from the entry's signature

Because it is a plain ``dict``, ``name in REGISTRY``, ``sorted(REGISTRY)`` and ``REGISTRY[name]`` keep working for
code written against the earlier hand-kept dicts.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Optional, TypeVar

from .utils import unknown_name_error

T = TypeVar("T")

#: The marker :meth:`Registry.options` gives a parameter without a default (it must be passed).
REQUIRED = inspect.Parameter.empty


class Registry(dict):
    """``name -> entry``, filled by :meth:`register`; ``kind`` names what is registered in error messages."""

    def __init__(self, kind: str, entries: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.kind = kind
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a second, different entry under one name is an error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name {name!r} must be a non-empty string")
        if name in self and self[name] is not entry:
            raise ValueError(f"{self.kind} name {name!r} is registered twice")
        self[name] = entry
        return entry

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator registering the decorated class or function under ``name`` (default: its ``name``
        attribute for a class that has one, else its ``__name__``)."""

        def decorate(entry: T) -> T:
            key = name or getattr(entry, "name", None) or getattr(entry, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"{entry!r} has no name to register it under as a {self.kind}")
            return self.add(key, entry)

        return decorate

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The entry registered as ``name``; an unknown name raises :class:`atkit.core.utils.ConfigError` naming the
        accepted ones (``default`` is accepted for ``dict`` compatibility and ignored)."""
        if name not in self:
            raise unknown_name_error(self.kind, name, self)
        return self[name]

    def names(self) -> list[str]:
        return sorted(self)

    def options(self, name: str, skip: Iterable[str] = ()) -> dict[str, Any]:
        """The keyword options of entry ``name`` with their defaults (:data:`REQUIRED` when none), read from its
        signature (a class's ``__init__``), leaving out ``self``, ``*args``/``**kwargs`` and the names in
        ``skip``."""
        entry = self.get(name)
        target = entry.__init__ if inspect.isclass(entry) else entry
        skipped = set(skip) | {"self"}
        out: dict[str, Any] = {}
        for param in inspect.signature(target).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name in skipped:
                continue
            out[param.name] = param.default
        return out


__all__ = ["REQUIRED", "Registry"]

"""Hyperparameter dataclasses: the one way a registered unit (method, add-on, evaluation attack) declares its
settings. A ``Params`` dataclass's field metadata (``help``, ``range``, ``choices``) drives validation
(:func:`build_params`), listings (:func:`describe_params`) and the widgets. Core: imports only :mod:`atkit.core.utils`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from .utils import ConfigError, check_field_types, unknown_name_error


def describe_params(params_cls: type) -> dict[str, dict[str, Any]]:
    """``{name: {"default": ..., "help": ...}}`` of a hyperparameter dataclass, for listings."""
    out = {}
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[f.name] = {"default": default, "help": f.metadata.get("help", "")}
    return out


def param_defaults(params_cls: type) -> dict[str, Any]:
    """``{name: default}`` of a hyperparameter dataclass."""
    return {name: info["default"] for name, info in describe_params(params_cls).items()}


def build_params(params_cls: type, values: Mapping[str, Any], owner: str, kind: str = "method") -> Any:
    """Instantiate ``params_cls`` from a mapping, refusing unknown keys, wrong types and values outside the
    field's ``choices`` or ``range`` with one line naming ``owner`` (e.g. ``trades``) and the accepted values."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"the settings of {kind} {owner!r} must be a mapping of names to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    for key in values:
        if key not in fields:
            raise unknown_name_error(f"hyperparameter of {kind} {owner!r}", key, fields)
    check_field_types(params_cls, values, f"{owner}.")
    for key, value in values.items():
        choices = fields[key].metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{owner}.{key}={value!r} is not accepted; choose one of {', '.join(map(repr, choices))}.")
        low, high = fields[key].metadata.get("range", (None, None))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
                raise ConfigError(f"{owner}.{key}={value!r} is out of range [{low}, {high}].")
    return params_cls(**values)


__all__ = ["build_params", "describe_params", "param_defaults"]

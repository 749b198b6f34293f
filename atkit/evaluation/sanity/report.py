"""The sanity checks' names and how a table shows them (no heavy imports: results tables read it)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

CHECK_NAMES = ("monotone_steps", "monotone_eps", "large_eps", "black_box", "zero_gradients", "randomness",
               "dummy_protocol")
# Short names for tables ("WARN: zero-gradients, black-box<white-box").
CHECK_LABELS = {
    "monotone_steps": "acc rises with steps",
    "monotone_eps": "acc rises with eps",
    "large_eps": "large-eps acc not ~0",
    "black_box": "black-box<white-box",
    "zero_gradients": "zero-gradients",
    "randomness": "randomized",
    "dummy_protocol": "published>adaptive",
}


def failed_checks(checks: Optional[Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    return [c for c in (checks or []) if not c.get("passed", True)]


def checks_summary(checks: Optional[Sequence[Mapping[str, Any]]]) -> str:
    """One cell for a results table: ``"ok"``, ``"WARN: zero-gradients, black-box<white-box"`` or
    ``"not run"`` when no checks were made."""
    if checks is None:
        return "not run"
    bad = failed_checks(checks)
    if not bad:
        return "ok"
    return "WARN: " + ", ".join(CHECK_LABELS.get(c["name"], c["name"]) for c in bad)


__all__ = ["CHECK_LABELS", "CHECK_NAMES", "checks_summary", "failed_checks"]

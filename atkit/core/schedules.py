"""Learning-rate schedules of the papers (docs/methods.md, common protocol)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .utils import ConfigError, unknown_name_error


@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant learning rate with optional linear warm-up.

    ``lr(t) = lr0 * prod_{m_i <= t} factor_i``, and during the first ``warmup_epochs`` the rate rises
    linearly from ``lr0 / steps`` to ``lr0``. ``t`` is the (fractional) epoch. When a run is shorter
    or longer than the schedule's own length, the milestones are scaled to the run's length so a
    shortened run keeps the shape of the paper's schedule.
    """

    name: str
    epochs: int
    milestones: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    warmup_epochs: float = 0.0
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    source: str = ""

    def scaled_to(self, epochs: int) -> "Schedule":
        if epochs == self.epochs:
            return self
        ratio = epochs / self.epochs
        return Schedule(self.name, epochs, tuple(m * ratio for m in self.milestones), self.factors,
                        self.warmup_epochs * ratio, self.lr, self.batch_size, self.source)

    def multiplier(self, epoch: float) -> float:
        """The factor applied to the base learning rate at fractional epoch ``epoch``."""
        factor = 1.0
        for m, f in zip(self.milestones, self.factors):
            if epoch >= m:
                factor *= f
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            factor *= max(epoch / self.warmup_epochs, 1e-3)
        return factor


def _rebat(decay: float = 0.5) -> Schedule:
    if not 0 < decay <= 1:
        raise ConfigError(f"rebat decay={decay!r} must be in (0, 1]; ReBAT's released code divides by f = 1.5 "
                          "(ReBAT) or 1.7 (ReBAT++), i.e. decay = 1/1.5 or 1/1.7.")
    # lr * decay at epoch 100 and lr * decay^2 from epoch 150 (RPAT, Sec. 5.3 "decay factor 0.5").
    return Schedule("rebat", 200, (100, 150), (decay, decay), source="RPAT, Sec. 5.3; ReBAT code uses f = 1.5/1.7")


_FIXED: dict[str, Schedule] = {
    "pang110": Schedule("pang110", 110, (100, 105), (0.1, 0.1), source="Pang et al. 2021; RPAT, App. A"),
    "sota200": Schedule("sota200", 200, (100, 150), (0.1, 0.1), source="RPAT, App. A"),
    "ducat130": Schedule("ducat130", 130, (100, 105), (0.1, 0.1), source="DUCAT, Sec. 3.1"),
    "fait100": Schedule("fait100", 100, (75, 90), (0.1, 0.1), warmup_epochs=5, lr=0.4, batch_size=512,
                        source="FAIT/MER paper, experimental setup"),
    "constant": Schedule("constant", 1, source="no decay"),
}
SCHEDULE_NAMES = tuple(sorted([*_FIXED, "rebat"]))


def get_schedule(name: str, **params: Any) -> Schedule:
    """Named schedule; only ``rebat`` takes a parameter (``decay``, default 0.5)."""
    if name == "rebat":
        unknown = set(params) - {"decay"}
        if unknown:
            raise unknown_name_error("rebat schedule parameter", sorted(unknown)[0], ["decay"])
        return _rebat(**params)
    if name not in _FIXED:
        raise unknown_name_error("schedule", name, SCHEDULE_NAMES)
    if params:
        raise ConfigError(f"schedule {name!r} takes no parameters (got {', '.join(params)}).")
    return _FIXED[name]

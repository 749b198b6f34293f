"""Progress that fits where the code runs: widget bars in a live notebook, text everywhere else.

One helper decides (:func:`progress_mode`) and one factory builds the display (:func:`progress_bar`):

* ``"widget"``: ``tqdm.auto`` notebook bars, for a Jupyter kernel with a front end (JupyterLab, VS Code);
* ``"bar"``: the classic tqdm text bar on a terminal (stderr is a TTY);
* ``"lines"``: one plain line per step or per ``interval`` seconds, for everything without a live front end:
  papermill and nbconvert (a saved notebook keeps widget bars as dead "0 %" widgets, text survives),
  pipes, log files, CI;
* ``"off"``: nothing.

The environment variable ``ATKIT_PROGRESS`` (one of the modes) overrides the decision; ``atkit notebook`` and
``atkit sweep`` set it to ``lines`` for the kernels they start.

:class:`Phases` reports a job made of phases (the final evaluation attack by attack, the sanity checks
check by check): per phase the images done, the elapsed time and an ETA, and a one-line status for a UI.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, TextIO

from .utils import ConfigError

PROGRESS_MODES = ("widget", "bar", "lines", "off")
PROGRESS_ENV = "ATKIT_PROGRESS"
# Parent processes that execute a notebook without a front end: widget bars would be saved dead.
HEADLESS_RUNNERS = ("papermill", "nbconvert", "nbclient", "nbmake", "pytest")
LINE_INTERVAL_S = 30.0


def decide_progress_mode(forced: Optional[str], shell: Optional[str], parent_cmdline: str,
                         stderr_is_tty: bool) -> str:
    """The progress mode from the facts :func:`progress_mode` gathers (a pure function, for tests).

    ``forced``: the value of ``ATKIT_PROGRESS`` (``None``/empty: not set); ``shell``: the IPython shell
    class name (``"ZMQInteractiveShell"`` in a Jupyter kernel, ``None`` outside IPython); ``parent_cmdline``:
    the command line of the parent process (a kernel started by papermill has papermill as parent).
    """
    if forced:
        mode = forced.strip().lower()
        if mode not in PROGRESS_MODES:
            raise ConfigError(f"{PROGRESS_ENV}={forced!r} is not a progress mode; "
                              f"accepted: {', '.join(PROGRESS_MODES)}")
        return mode
    if shell == "ZMQInteractiveShell":
        cmd = parent_cmdline.lower()
        return "lines" if any(name in cmd for name in HEADLESS_RUNNERS) else "widget"
    return "bar" if stderr_is_tty else "lines"


def _shell_name() -> Optional[str]:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a broken IPython import: treat as no shell
        return None
    return None if shell is None else type(shell).__name__


def _parent_cmdline() -> str:
    """The parent process's command line ("" when the platform does not tell)."""
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:  # macOS / Windows: psutil when installed
        import psutil  # optional; only for this fallback

        return " ".join(psutil.Process(ppid).cmdline())
    except Exception:  # noqa: BLE001 - no psutil or no permission
        return ""


def default_stream() -> TextIO:
    """Where text progress goes: stdout in a notebook kernel (stderr shows as an error there), else stderr."""
    return sys.stdout if _shell_name() == "ZMQInteractiveShell" else sys.stderr


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_mode() -> str:
    """``"widget"``, ``"bar"``, ``"lines"`` or ``"off"`` for the current process (see the module doc)."""
    return decide_progress_mode(os.environ.get(PROGRESS_ENV), _shell_name(), _parent_cmdline(), _isatty(sys.stderr))


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):  # NaN / unknown
        return "?"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def eta_seconds(done: float, total: Optional[float], elapsed: float) -> float:
    """Remaining time at the average rate so far: ``elapsed * (total - done) / done`` (NaN when unknown)."""
    if not total or done <= 0:
        return float("nan")
    return elapsed * max(total - done, 0) / done


def progress_text(desc: str, done: float, total: Optional[float], elapsed: float, unit: str = "it") -> str:
    """``"desc: 300/1000 img (30%), 12 s, ETA 28 s"``: the line the text modes print and UIs show."""
    if total and done > 0:
        return (f"{desc}: {done:g}/{total:g} {unit} ({100.0 * done / total:.0f}%), {_fmt_seconds(elapsed)}, "
                f"ETA {_fmt_seconds(eta_seconds(done, total, elapsed))}")
    if total:  # nothing counted yet (e.g. AutoAttack reports its sub-attacks instead)
        return f"{desc}: {total:g} {unit}, running for {_fmt_seconds(elapsed)}"
    return f"{desc}: {done:g} {unit}, {_fmt_seconds(elapsed)}"


class LineProgress:
    """A tqdm stand-in that prints whole lines: at most one per ``interval`` seconds, and one at the end.

    The subset of tqdm's API atkit uses: iteration, ``update``, ``set_description``, ``set_postfix_str``,
    ``close``, and use as a context manager. ``leave=False``: no line at the end (the caller prints its own).
    """

    def __init__(self, iterable: Optional[Iterable[Any]] = None, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", *, interval: float = LINE_INTERVAL_S, file: Optional[TextIO] = None,
                 leave: bool = True, on_text: Optional[Callable[[str], None]] = None, **_ignored: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.interval = total, desc, unit, float(interval)
        self.file = file
        self.leave = leave
        self.on_text = on_text
        self.n = 0
        self.postfix = ""
        self.start = self._last = time.time()
        self.closed = False

    def _write(self, text: str) -> None:
        if self.on_text is not None:
            self.on_text(text)
        print(text, file=self.file or default_stream(), flush=True)

    def text(self) -> str:
        line = progress_text(self.desc, self.n, self.total, time.time() - self.start, self.unit)
        return f"{line}, {self.postfix}" if self.postfix else line

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.time()
        if now - self._last >= self.interval and not (self.total and self.n >= self.total):
            self._last = now
            self._write(self.text())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.leave:
            return
        elapsed = time.time() - self.start
        total = f"/{self.total:g}" if self.total else ""
        end = f"{self.desc}: {self.n:g}{total} {self.unit} in {_fmt_seconds(elapsed)}"
        self._write(f"{end}, {self.postfix}" if self.postfix else end)

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _NoProgress(LineProgress):
    def _write(self, text: str) -> None:
        if self.on_text is not None:
            self.on_text(text)


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", leave: bool = True, disable: bool = False, mode: Optional[str] = None,
                 interval: float = LINE_INTERVAL_S, file: Optional[TextIO] = None) -> Any:
    """A progress display for the current environment (:func:`progress_mode`, or ``mode``): a tqdm bar
    (widget or text) or a :class:`LineProgress`. Use as tqdm: iterate over it, or ``update`` and ``close``."""
    mode = "off" if disable else (mode or progress_mode())
    if mode not in PROGRESS_MODES:
        raise ConfigError(f"progress mode {mode!r} is not one of {', '.join(PROGRESS_MODES)}")
    if mode == "off":
        return _NoProgress(iterable, total=total, desc=desc, unit=unit, interval=float("inf"))
    if mode in ("widget", "bar"):
        if mode == "widget":  # tqdm.auto pulls in ipywidgets: only in a notebook front end
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, interval=interval, file=file, leave=leave)


class Phases:
    """Progress of a job made of phases, e.g. a final evaluation attack by attack.

    ``label`` prefixes every line (``"final evaluation [best]"``); ``show``: print (in :func:`progress_mode`'s
    way; ``mode`` forces one); ``on_status``: called with a one-line status at each phase start, at most every
    ``status_interval`` seconds during a phase and at its end (for a UI's status line). :meth:`child`
    gives a reporter with a longer label sharing the same outputs (sanity checks inside an evaluation).
    """

    def __init__(self, label: str = "", *, show: bool = True, on_status: Optional[Callable[[str], None]] = None,
                 mode: Optional[str] = None, interval: float = LINE_INTERVAL_S, status_interval: float = 0.5,
                 file: Optional[TextIO] = None) -> None:
        self.label = label
        self.show = show
        self.on_status = on_status
        self.mode = mode
        self.interval = interval
        self.status_interval = status_interval
        self.file = file

    def child(self, label: str) -> "Phases":
        full = f"{self.label} {label}".strip() if self.label else label
        return Phases(full, show=self.show, on_status=self.on_status, mode=self.mode, interval=self.interval,
                      status_interval=self.status_interval, file=self.file)

    def _name(self, name: str) -> str:
        return f"{self.label} {name}".strip() if self.label else name

    def status(self, text: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(text)
            except Exception:  # noqa: BLE001 - a UI problem must not stop an evaluation
                pass

    def note(self, text: str, sep: str = " ") -> None:
        """One line ``label + sep + text`` (a result, a plan): printed when ``show``, passed to ``on_status``."""
        line = f"{self.label}{sep}{text}" if self.label else text
        self.status(line)
        if self.show and (self.mode or progress_mode()) != "off":
            print(line, file=self.file or default_stream(), flush=True)

    def start(self, name: str, total: Optional[int] = None, unit: str = "img") -> "PhaseBar":
        """Begin a phase of ``total`` items; ``update(k)`` it and ``close(summary)`` it when done."""
        desc = self._name(name)
        mode = "off" if not self.show else (self.mode or progress_mode())
        bar = progress_bar(total=total, desc=desc, unit=unit, leave=False, mode=mode, interval=self.interval,
                           file=self.file)
        self.status(progress_text(desc, 0, total, 0.0, unit))
        return PhaseBar(bar, desc, total, unit, self, mode)

    @contextmanager
    def phase(self, name: str, total: Optional[int] = None, unit: str = "img") -> Iterator["PhaseBar"]:
        """:meth:`start` as a context manager: ``with phases.phase("pgd20", n) as bar: bar.update(k)``."""
        bar = self.start(name, total, unit)
        try:
            yield bar
        finally:
            bar.close()


class PhaseBar:
    """One phase of :class:`Phases`: ``update(k)`` moves the display and the status line; ``close(summary)``
    ends it with one line ``"<label> <phase>: 500/500 img in 4.1 s, <summary>"``."""

    def __init__(self, bar: Any, desc: str, total: Optional[int], unit: str, phases: Phases, mode: str) -> None:
        self.bar, self.desc, self.total, self.unit = bar, desc, total, unit
        self.phases, self.mode = phases, mode
        self.done = 0
        self.postfix = ""
        self.start = self._last_status = time.time()
        self._sub_began: dict[str, float] = {}
        self.closed = False

    def text(self) -> str:
        line = progress_text(self.desc, self.done, self.total, time.time() - self.start, self.unit)
        return f"{line}, {self.postfix}" if self.postfix else line

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.time()
        if now - self._last_status >= self.phases.status_interval:
            self._last_status = now
            self.phases.status(self.text())

    def set_postfix_str(self, s: str) -> None:
        """A detail of the phase (e.g. AutoAttack's current sub-attack), shown beside the count."""
        self.postfix = s
        self.bar.set_postfix_str(s)
        self.update(0)

    def sub(self, name: str, done: int, total: int) -> None:
        """Progress of a step inside the phase (AutoAttack's APGD-CE, ...): ``"apgd-ce 200/480 img, ETA 30 s"``."""
        began = self._sub_began.setdefault(name, time.time())
        eta = _fmt_seconds(eta_seconds(done, total, time.time() - began))
        self.set_postfix_str(f"{name} {done}/{total} {self.unit}, ETA {eta}")

    def close(self, summary: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = time.time() - self.start
        self.bar.set_postfix_str(summary)
        self.bar.close()
        total = f"/{self.total:g}" if self.total else ""
        line = f"{self.desc}: {self.done:g}{total} {self.unit} in {_fmt_seconds(elapsed)}"
        line = f"{line}, {summary}" if summary else line
        self.phases.status(line)
        if self.mode != "off":  # one line that stays: the bar (leave=False) is gone or never printed an end
            print(line, file=self.phases.file or default_stream(), flush=True)


def as_phases(progress: Any, label: str) -> Optional[Phases]:
    """``progress`` argument of an evaluation -> a :class:`Phases` or None: ``False``/``None`` (silent),
    ``True`` (print, labelled ``label``) or a :class:`Phases` (used as is)."""
    if isinstance(progress, Phases):
        return progress
    if progress is True:
        return Phases(label)
    if progress in (False, None):
        return None
    raise ConfigError(f"progress={progress!r} must be True, False or an atkit.core.progress.Phases")


__all__ = ["HEADLESS_RUNNERS", "LineProgress", "PROGRESS_ENV", "PROGRESS_MODES", "Phases", "as_phases",
           "decide_progress_mode", "eta_seconds", "progress_bar", "progress_mode", "progress_text"]

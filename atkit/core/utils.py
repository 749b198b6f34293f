"""Small shared helpers: validation errors, type checks, YAML files, atomic file writes (and tables, JSON reads,
write errors), run-folder locks, seeding, device choice."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import io
import json
import os
import random
import reprlib
import sys
import tempfile
import time
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
import yaml


class ConfigError(ValueError):
    """A bad value supplied by the user (unknown name, out-of-range number, missing path).

    Raised before any work starts; the message names the bad value and what is accepted.
    """


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 100, 100
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 8


def short_repr(value: Any, limit: int = 160) -> str:
    """``repr(value)`` bounded in work and length (at most ``limit`` characters), for error messages: a value
    from a user's file can be huge (a YAML alias bomb expands to billions of items), and a message that echoes
    it in full would hang or flood the terminal."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def unknown_name_error(kind: str, name: str, accepted: Iterable[str]) -> ConfigError:
    """Build the standard error for an unknown name, with the closest valid one suggested."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(str(name)[:200], accepted, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {short_repr(name)}.{hint} Accepted: {', '.join(accepted)}.")


def check_plain_name(what: str, name: Any, inside: str) -> str:
    """``name`` if it is a plain folder name (no path separator, not ``.``/``..``, not empty), else a
    :class:`ConfigError`: a name is joined to a parent folder (``inside``) and must not climb out of it."""
    text = str(name) if isinstance(name, (str, int)) and not isinstance(name, bool) else None
    if (text is None or not text.strip() or text in (".", "..") or "\0" in text
            or any(sep in text for sep in ("/", "\\", os.sep))):
        raise ConfigError(f"{what}={short_repr(name)} must be a plain folder name (no '/', '\\', '.' or '..'): "
                          f"the folder is created inside {inside}")
    return text


def set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    """``params["a"]["b"] = value`` for ``key = "a.b"`` (creating or copying the inner dict)."""
    head, _, rest = key.partition(".")
    if not head:
        raise ConfigError(f"key {key!r} is empty before a '.'")
    if not rest:
        params[key] = copy.deepcopy(value)
        return
    inner = params.get(head)
    if inner is None:
        inner = {}
    if not isinstance(inner, dict):
        raise ConfigError(f"key {key!r}: {head!r} is {short_repr(inner)}, not a mapping, so it has no {rest!r}")
    inner = dict(inner)
    set_dotted(inner, rest, value)
    params[head] = inner


def parse_set_options(items: Iterable[str] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", "name=x"]`` (the CLI's ``--set``) as ``[("a.b", 1), ("name", "x")]``; values are YAML."""
    out = []
    for item in items or ():
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (dotted keys set one entry of a mapping, "
                              "e.g. data.root=data/cifar10-jpeg)")
        try:
            value = yaml.load(raw, Loader=UniqueKeyLoader) if raw.strip() else ""
        except yaml.YAMLError as err:
            why = "is refused" if isinstance(err, YAMLTooLargeError) else "is not valid YAML"
            raise ConfigError(f"--set {short_repr(item)}: the value {why} ({str(err).splitlines()[0]})") from None
        out.append((key.strip(), value))
    return out


def apply_set_options(params: dict[str, Any], items: Iterable[str] | None) -> dict[str, Any]:
    """A copy of ``params`` with every ``--set KEY=VALUE`` applied in order."""
    params = dict(params)
    for key, value in parse_set_options(items):
        set_dotted(params, key, value)
    return params


def _type_words(annotation: Any) -> str:
    """``Optional[int]`` as ``"an integer or null"`` (what error messages say is accepted)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        words = [_type_words(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if annotation is type(None):
        return "null"
    base = origin or annotation
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
             list: "a list", tuple: "a list"}
    if base in (list, tuple) and args and args[0] is not Ellipsis:
        return f"a list of {_type_words(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return names.get(base, getattr(base, "__name__", str(base)))


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is typing.Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if annotation is type(None):
        return value is None
    base = origin or annotation
    if base is bool:
        return isinstance(value, bool)
    if base is int:  # YAML's true/false are not integers
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base in (dict, Mapping):
        return isinstance(value, Mapping)
    if base in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if args and args[-1] is not Ellipsis and base is list:
            return all(_matches(v, args[0]) for v in value)
        if args and args[-1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return True
    if base is str:
        return isinstance(value, str)
    return True  # other annotations (classes, callables) are checked where they are used


def _number_text_hint(text: str) -> str:
    """Why a number arrived as a string: YAML 1.1 (PyYAML) reads ``1e-3`` as text, ``1.0e-3`` as a number."""
    try:
        float(text)
    except ValueError:
        return ""
    mantissa, _, exponent = text.lower().partition("e")
    if not exponent:
        return f"; write {text} without quotes"
    mantissa = mantissa if "." in mantissa else mantissa + ".0"
    exponent = exponent if exponent[0] in "+-" else "+" + exponent
    return f"; YAML reads {text} as text: write {mantissa}e{exponent}"


def check_type(where: str, value: Any, annotation: Any) -> None:
    """Refuse ``value`` unless it has the declared type ``annotation`` (``int``, ``Optional[float]``,
    ``list[str]``, ``dict[str, Any]``, ...); booleans are not integers, integers are numbers."""
    if not _matches(value, annotation):
        hint = ""
        if isinstance(value, str):
            hint = _number_text_hint(value.strip())
        raise ConfigError(f"{where}={short_repr(value)} must be {_type_words(annotation)} "
                          f"(got {type(value).__name__}{hint})")


def check_field_types(obj_cls: type, values: Mapping[str, Any], prefix: str = "") -> None:
    """:func:`check_type` for every key of ``values`` that is a field of the dataclass ``obj_cls``."""
    hints = typing.get_type_hints(obj_cls)
    for f in dataclasses.fields(obj_cls):
        if f.name in values and f.name in hints:
            check_type(f"{prefix}{f.name}", values[f.name], hints[f.name])


#: The most values a YAML document may hold once its aliases are expanded (a config has hundreds).
MAX_YAML_VALUES = 100_000


class YAMLTooLargeError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond :data:`MAX_YAML_VALUES` values, or refer to themselves."""


def _node_children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def yaml_expanded_size(root: Any, limit: int = MAX_YAML_VALUES) -> int:
    """How many values a composed YAML node holds with every alias expanded (capped at ``limit + 1``), counted
    once per distinct node (linear time, however many times the aliases repeat); a node that contains itself
    (a recursive alias) raises :class:`YAMLTooLargeError`."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in _node_children(node)))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLTooLargeError("an alias refers to the value that contains it (a recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _node_children(node) if id(c) not in sizes)
    return sizes[id(root)]


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last silently) and a
    document whose aliases expand beyond :data:`MAX_YAML_VALUES` values (an alias bomb: a few hundred bytes that
    stand for billions of values, which anything that walks the data, such as an error message, would expand)."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if yaml_expanded_size(node) > MAX_YAML_VALUES:
            raise YAMLTooLargeError(f"its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values (an alias "
                                    "bomb?); write the values out instead of repeating aliases")
        return self.construct_document(node)


def _construct_unique_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_mapping(path: str | os.PathLike, what: str = "YAML file", *, allow_empty: bool = False) -> dict[str, Any]:
    """The mapping in a YAML file, or a one-line :class:`ConfigError`: missing file, YAML syntax error (with
    its line), a key given twice, a file holding a list or a bare string, or (unless ``allow_empty``) nothing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except YAMLTooLargeError as e:
        raise ConfigError(f"{what} {str(path)!r} is refused: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{where}: {e.problem or e.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        if allow_empty:
            return {}
        raise ConfigError(f"{what} {str(path)!r} is empty; it must hold a mapping of keys to values")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} holds a {type(data).__name__} ({short_repr(data, 60)}), not a mapping "
                          "of keys to values (write one 'key: value' per line)")
    return data


def check_choice(kind: str, value: Any, accepted: Iterable[str]) -> Any:
    accepted = list(accepted)
    if value not in accepted:
        raise unknown_name_error(kind, value, accepted)
    return value


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's file-creation mask (read from ``/proc`` where possible: ``os.umask`` must set it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed over the
    target (``os.replace`` is atomic on POSIX and Windows). A crash mid-write leaves at most a stray
    ``.tmp`` file, never a truncated target. The file gets the mode ``open()`` would give it (0666 minus
    the umask), not the 0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a plain open() would give 0666 minus the umask, which is what users expect.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically. If the write fails (a full disk, a read-only folder), the text is kept
    where it can be recovered (:func:`keep_unsaved`) and the OSError, re-raised, names that place in its
    ``recovered_to`` attribute: results computed for hours are never lost to a failed final write."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as e:
        e.recovered_to = keep_unsaved(path, text)  # type: ignore[attr-defined]
        raise


UNSAVED_DIR = "atkit-unsaved"


def keep_unsaved(path: str | os.PathLike, text: str) -> str:
    """Keep the ``text`` that could not be written to ``path``: in ``<temp dir>/atkit-unsaved/`` (``$TMPDIR``,
    usually another file system than the full one), else on stderr. Returns where it went."""
    name = Path(path).name
    try:
        folder = Path(tempfile.gettempdir()) / UNSAVED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd, kept = tempfile.mkstemp(dir=folder, prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-", suffix=f"-{name}")
        with os.fdopen(fd, "w") as f:
            f.write(f"{text}")
        return kept
    except OSError:
        sys.stderr.write(f"atkit: the content of {str(path)!r} follows (it could not be written):\n{text}\n")
        sys.stderr.flush()
        return "stderr (above)"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (checkpoints are never half-written)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_table(frame: Any, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV atomically (lists and dicts as JSON text)."""
    path = Path(path)
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (list, dict))).any():
            out[col] = out[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
    atomic_write_text(path, out.to_csv(index=False))
    return path


def read_json(path: str | os.PathLike) -> Optional[Any]:
    """The JSON in ``path``, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class OutputWriteError(RuntimeError):
    """A run file could not be written (disk full, folder not writable, ...).

    The message names the file and the system's reason; files written before are intact (every
    write is atomic), so the run resumes from its last checkpoint once the cause is fixed.
    """

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        reason = error.strerror or str(error)
        code = f"errno {error.errno}, " if error.errno is not None else ""
        kept = getattr(error, "recovered_to", None)
        kept_text = f"; what it would have held is kept in {kept}" if kept else ""
        super().__init__(f"could not write {str(path)!r}: {reason} ({code}{type(error).__name__}){kept_text}; files "
                         "saved before are intact: free space or fix permissions, then resume with --resume RUN_DIR")
        self.path, self.errno, self.reason, self.recovered_to = Path(path), error.errno, reason, kept


def guarded_write(path: str | os.PathLike, write: Any) -> None:
    """Run ``write()`` (an atomic write of ``path``), turning an OSError into :class:`OutputWriteError`."""
    try:
        write()
    except OSError as e:
        raise OutputWriteError(path, e) from e


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete ``.<name>.*.tmp`` files that a killed atomic write left behind (never a real file)."""
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


class RunInUseError(ConfigError):
    """Another live process holds the lock of a run folder (it is training or evaluating there)."""


class FolderLock:
    """An exclusive OS lock (``fcntl.flock``) on ``folder/.lock`` while a process writes in ``folder``.

    The kernel drops the lock when the holder's file is closed, so a process that dies (even by kill -9)
    frees it at once. The lock file records the holder's PID for the refusal message.
    """

    FILE = ".lock"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / self.FILE
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, what: str = "run folder", doing: str = "is training or evaluating in it") -> "FolderLock":
        """Take the lock, or raise :class:`RunInUseError` naming the PID that holds it (``what`` and ``doing``
        word the refusal: "sweep folder ... (another process is running a sweep into it)")."""
        import fcntl  # POSIX only: importing it at the top would break `import atkit` on Windows

        if self._fd is not None:
            return self
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self.holder()
            raise RunInUseError(f"{what} {str(self.path.parent)!r} is in use by PID {holder or '?'} (another process "
                                f"{doing}); wait for it to end, or start a new run") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def holder(self) -> Optional[int]:
        """PID recorded by the current (or last) holder, if any."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_locked(self) -> bool:
        """Whether some open file (this process's or another's) holds the lock now."""
        if self._fd is not None:
            return True
        if not self.path.is_file():
            return False
        for _ in range(3):  # another process's probe holds it for microseconds; a writer holds it for good
            try:
                self.acquire()
            except RunInUseError:
                time.sleep(0.05)
                continue
            except OSError:  # read-only folder: nobody can be writing there
                return False
            self.release()
            return False
        return True

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the OS closes the file (and drops the lock) anyway
            pass


OUTPUT_MARKER = ".atkit-notebook"


def claim_output_folder(folder: str | os.PathLike, notebook: str) -> Path:
    """Create ``folder`` for the outputs of ``notebook`` and record it there (a one-line marker file);
    refuse a folder that already holds another notebook's results, naming that notebook.

    Two notebooks write files of the same names (``metrics.json``), so sharing an out folder would let the
    second silently replace the first's numbers.
    """
    folder = Path(folder)
    marker = folder / OUTPUT_MARKER
    owner = marker.read_text().strip() if marker.is_file() else None
    if owner is None and (folder / "metrics.json").is_file():  # results written before markers existed
        try:
            found = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict):
            owner = found.get("notebook") or found.get("experiment")
    if owner and owner != notebook:
        raise ConfigError(f"out folder {str(folder)!r} holds the results of notebook {owner!r}; running "
                          f"{notebook!r} there would overwrite them (its metrics.json): give another --out")
    folder.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_text(marker, notebook + "\n")
    return folder


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (else buffer); the CPU for a model with neither."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")

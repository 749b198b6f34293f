"""Small shared helpers: validation errors, atomic file writes, seeding, device choice."""
from __future__ import annotations

import copy
import difflib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch


class ConfigError(ValueError):
    """A bad value supplied by the user (unknown name, out-of-range number, missing path).

    Raised before any work starts; the message names the bad value and what is accepted.
    """


def unknown_name_error(kind: str, name: str, accepted: Iterable[str]) -> ConfigError:
    """Build the standard error for an unknown name, with the closest valid one suggested."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(str(name), accepted, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Accepted: {', '.join(accepted)}.")


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
        raise ConfigError(f"key {key!r}: {head!r} is {inner!r}, not a mapping, so it has no {rest!r}")
    inner = dict(inner)
    set_dotted(inner, rest, value)
    params[head] = inner


def parse_set_options(items: Iterable[str] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", "name=x"]`` (the CLI's ``--set``) as ``[("a.b", 1), ("name", "x")]``; values are YAML."""
    import yaml

    out = []
    for item in items or ():
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (dotted keys set one entry of a mapping, "
                              "e.g. data.root=data/cifar10-jpeg)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
        out.append((key.strip(), value))
    return out


def apply_set_options(params: dict[str, Any], items: Iterable[str] | None) -> dict[str, Any]:
    """A copy of ``params`` with every ``--set KEY=VALUE`` applied in order."""
    params = dict(params)
    for key, value in parse_set_options(items):
        set_dotted(params, key, value)
    return params


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed over the
    target (``os.replace`` is atomic on POSIX and Windows). A crash mid-write leaves at most a stray
    ``.tmp`` file, never a truncated target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (checkpoints are never half-written)."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

"""Reading checkpoint files without executing them, and clear errors when a checkpoint does not fit.

Every checkpoint atkit reads goes through :func:`load_checkpoint_file`: ``torch.load(weights_only=True)``
with an allow-list of exactly what atkit's own checkpoints hold beyond tensors and plain containers
(the numpy RNG state: ``ndarray``, ``dtype`` and numpy's array reconstructor). A file that needs any
other Python object would have to be unpickled, which can run arbitrary code; it is refused with the
objects it names and a one-line conversion to a plain state dict. What a file really is (an HTML page, an
archive, a pickled model) is said first by :mod:`atkit.core.checkpoint_sniff`; a zip bomb is refused from its
declared sizes (:func:`check_declared_sizes`).

:func:`extract_state_dict` accepts the usual wrappers of other people's checkpoints (``state_dict``,
``model``, ``model_state_dict``, ``net``; ``module.`` and ``_orig_mod.`` prefixes of DataParallel /
DDP / ``torch.compile``); :func:`load_weights` names the first missing, unexpected or mis-shaped keys
and says when the difference is the class count (the checkpoint and the run's config disagree). A run's own
checkpoints (what they hold, saving, resuming) are :mod:`atkit.training.checkpoints`.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from .checkpoint_sniff import check_checkpoint_file
from .provenance import checkpoint_record
from .utils import ConfigError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

#: What ``torch.load(weights_only=True)`` may build beyond tensors: numpy's RNG state (``np.random.get_state()``).
SAFE_GLOBALS: list[Any] = [_np_reconstruct, np.ndarray, np.dtype]
if hasattr(np, "dtypes"):
    SAFE_GLOBALS += [np.dtypes.UInt32DType, np.dtypes.Int64DType, np.dtypes.Float64DType]

#: Keys under which other people's checkpoints wrap their state dict (tried in this order).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
#: Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def alternatives_hint(path: str | Path) -> str:
    """What to try instead of a bad checkpoint: the other one of a run's best.pt / last.pt, or a fresh run."""
    path = Path(path)
    other = {"best.pt": "last.pt", "last.pt": "best.pt"}.get(path.name)
    if other is not None and (path.parent / other).is_file():
        return f"try the run's other checkpoint {str(path.parent / other)!r}, or start a fresh run"
    return "use another checkpoint file, or start a fresh run"


def _conversion_hint(path: Path) -> str:
    out = path.with_name(path.stem + ".weights.pt")
    return ("if you trust the file, convert it once to a plain state dict: python -c \"import torch; "
            f"m = torch.load('{path}', weights_only=False); sd = m.state_dict() if hasattr(m, 'state_dict') else m; "
            f"torch.save(sd, '{out}')\" and pass {str(out)!r}")


#: A zip checkpoint may declare at most this many times its own size in unpacked bytes (torch stores its entries
#: uncompressed, so its own files declare about 1x), and at least :data:`MIN_DECLARED_LIMIT` is always allowed.
MAX_EXPANSION = 16
MIN_DECLARED_LIMIT = 256 << 20


def check_declared_sizes(data: bytes, path: str | Path) -> None:
    """Refuse a zip checkpoint whose entries declare more unpacked bytes than ``MAX_EXPANSION`` times the file
    (and :data:`MIN_DECLARED_LIMIT`): a "zip bomb" would otherwise be inflated in full before any other check.
    Read from the zip's directory (``ZipInfo.file_size``) without inflating anything; the reader torch uses
    unpacks an entry into a buffer of its declared size, so the declared sizes bound what loading can take."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        return
    try:
        with zipfile.ZipFile(buffer) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load names the damage
    limit = max(MIN_DECLARED_LIMIT, MAX_EXPANSION * len(data))
    if declared > limit:
        raise ConfigError(f"refused to load checkpoint {str(path)!r}: its {len(data):,} bytes declare {declared:,} "
                          f"bytes once unpacked, more than {limit:,} ({MAX_EXPANSION}x its size; a zip bomb?); "
                          "PyTorch's own checkpoints are stored uncompressed")


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", *, hint: Optional[str] = None) -> Any:
    """``torch.load(path, weights_only=True)`` with atkit's allow-list (:data:`SAFE_GLOBALS`); see
    :func:`load_checkpoint_with_record`, which also returns the record of the bytes it loaded."""
    return load_checkpoint_with_record(path, map_location, hint=hint)[0]


def load_checkpoint_with_record(path: str | Path, map_location: Any = "cpu", *,
                                hint: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """``(checkpoint, record)``: the file read once, its declared sizes checked (:func:`check_declared_sizes`),
    loaded with ``torch.load(weights_only=True)`` and atkit's allow-list (:data:`SAFE_GLOBALS`) from those very
    bytes, and their record (path, SHA-256, size: :func:`atkit.core.provenance.checkpoint_record`): the hash in an
    evaluation's provenance is of the weights that were evaluated, even if the file is replaced meanwhile.

    Raises :class:`ConfigError` naming the file when it is missing, truncated or not a PyTorch file
    (with ``hint``, default :func:`alternatives_hint`), or when it needs arbitrary unpickling (with the
    objects it asks for and how to convert it).
    """
    path = Path(path)
    hint = hint or alternatives_hint(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read checkpoint {str(path)!r}: {e.strerror or e}") from None
    check_declared_sizes(data, path)  # a zip bomb is refused from its declared sizes before anything is inflated
    check_checkpoint_file(path, _conversion_hint(path))  # an HTML page, an archive, a pickled model: say which
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return (torch.load(io.BytesIO(data), map_location=map_location, weights_only=True),
                    checkpoint_record(path, data))
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(data)
        if names is None:  # neither a zip checkpoint asking for objects nor a legacy pickle: garbage
            raise ConfigError(f"cannot read checkpoint {str(path)!r}: the file is truncated or not a PyTorch "
                              f"checkpoint ({_first_line(e)}); {hint}") from None
        what = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
        raise ConfigError(f"refused to load checkpoint {str(path)!r}: it holds Python objects beyond tensors{what}, "
                          "and unpickling them could run arbitrary code (atkit loads checkpoints with "
                          f"torch.load(weights_only=True)); {_conversion_hint(path)}") from None
    except Exception as e:  # truncated zip, a text file, ...: torch raises RuntimeError, OSError, KeyError, EOFError
        raise ConfigError(f"cannot read checkpoint {str(path)!r}: the file is truncated or not a PyTorch checkpoint "
                          f"({type(e).__name__}: {_first_line(e)}); {hint}") from None


def _unsafe_globals(data: bytes) -> Optional[list[str]]:
    """Objects a checkpoint asks to unpickle beyond the allow-list: names for a zip checkpoint, ``[]`` for a
    legacy pickle (torch cannot list them), None when the file is neither (so it is corrupt, not unsafe)."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        except Exception:
            return None
        allowed = {_qualname(g) for g in SAFE_GLOBALS}
        names = [n for n in names if n not in allowed]
        return names or None
    return [] if data[:1] == b"\x80" else None  # the pickle protocol marker legacy torch.save files start with


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights in a loaded checkpoint: a plain state dict, or one under :data:`WRAPPER_KEYS`
    (atkit's own format keeps them under ``model``), with :data:`WRAPPER_PREFIXES` stripped."""
    state = obj
    for _ in range(3):  # nested wrappers such as {"model": {"state_dict": ...}}
        if _is_state_dict(state):
            break
        if not isinstance(state, Mapping):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not _is_state_dict(state):
        found = type(obj).__name__ if not isinstance(obj, Mapping) else f"a mapping with keys {sorted(map(str, obj))[:8]}"
        raise ConfigError(f"{source} holds no state dict of tensors (found {found}); expected a state dict, or one "
                          f"under one of the keys {', '.join(WRAPPER_KEYS)}")
    out = dict(state)
    for prefix in WRAPPER_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def _output_width(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """Rows of the last 2-D weight (the classifier head) in a state dict's order, if any."""
    width = None
    for key, value in state.items():
        if key.endswith("weight") and value.dim() == 2:
            width = int(value.shape[0])
    return width


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                 hint: Optional[str] = None) -> None:
    """``model.load_state_dict(state)`` with a :class:`ConfigError` naming the first differing keys.

    When the only shape difference is the classifier head's width, the message says that the
    checkpoint and the run's config disagree on the class count.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    tail = f"; {hint}" if hint else ""
    if not missing and not unexpected and shapes:
        have, want = _output_width(state), _output_width(expected)
        if have is not None and want is not None and have != want:
            raise ConfigError(f"{source} has a {have}-output classifier head but the run's config builds a model "
                              f"with {want} outputs: the checkpoint and the run's config disagree on the class count "
                              "(dataset, num_classes or dummy classes)" + tail)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''} ({len(missing)} in all)")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''} "
                         f"({len(unexpected)} in all)")
        if shapes:
            parts.append("shape mismatch " + ", ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:3]))
        raise ConfigError(f"{source} does not fit model {type(model).__name__}: " + "; ".join(parts)
                          + " (a different architecture or model options?)" + tail)
    model.load_state_dict(dict(state))


def require_atkit_checkpoint(state: Any, path: str | Path, keys: tuple[str, ...] = ("model", "config")) -> dict:
    """``state`` if it is an atkit checkpoint with ``keys``; else a :class:`ConfigError` naming the file."""
    if not isinstance(state, Mapping) or any(k not in state for k in keys):
        found = sorted(map(str, state))[:8] if isinstance(state, Mapping) else type(state).__name__
        raise ConfigError(f"{str(path)!r} is not an atkit checkpoint (expected the keys {list(keys)}, found {found}); "
                          f"{alternatives_hint(path)}; a plain state dict is evaluated with "
                          "`atkit eval --checkpoint FILE --model NAME`")
    return dict(state)


__all__ = ["MAX_EXPANSION", "MIN_DECLARED_LIMIT", "SAFE_GLOBALS", "WRAPPER_KEYS", "WRAPPER_PREFIXES", "alternatives_hint",
           "check_declared_sizes", "extract_state_dict", "load_checkpoint_file", "load_checkpoint_with_record",
           "load_weights", "require_atkit_checkpoint"]

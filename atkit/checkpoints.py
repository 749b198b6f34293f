"""Loading checkpoints without executing them, and clear errors when a checkpoint does not fit.

Every checkpoint atkit reads goes through :func:`load_checkpoint_file`: ``torch.load(weights_only=True)``
with an allow-list of exactly what atkit's own checkpoints hold beyond tensors and plain containers
(the numpy RNG state: ``ndarray``, ``dtype`` and numpy's array reconstructor). A file that needs any
other Python object would have to be unpickled, which can run arbitrary code; it is refused with the
objects it names and a one-line conversion to a plain state dict.

:func:`extract_state_dict` accepts the usual wrappers of other people's checkpoints (``state_dict``,
``model``, ``model_state_dict``, ``net``; ``module.`` and ``_orig_mod.`` prefixes of DataParallel /
DDP / ``torch.compile``); :func:`load_weights` names the first missing, unexpected or mis-shaped keys
and says when the difference is the class count (the checkpoint and the run's config disagree).

A trainer's own checkpoints (:class:`atkit.train.Trainer` keeps thin methods calling these):
:func:`trainer_state` is everything an exact resume needs (weights, optimiser, averages, method state, history,
RNG states, config, data fingerprint); :func:`save_trainer_checkpoint` writes it atomically as
``checkpoints/last.pt`` and, for the best epoch, its weights as ``best.pt`` (:func:`best_state`);
:func:`restore_trainer_state` loads it back after :func:`check_checkpoint_compatible` and the data check;
:func:`repair_best_checkpoint` rebuilds a ``best.pt`` that a kill left behind its ``last.pt``;
:func:`load_model` rebuilds the model of any atkit checkpoint or run folder.
"""
from __future__ import annotations

import copy
import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint_sniff import check_checkpoint_file
from .config import RunConfig
from .models import build_model
from .models.external import fit_state_to_model
from .provenance import checkpoint_record
from .utils import ConfigError, atomic_torch_save, file_sha256, guarded_write  # file_sha256 re-exported

if TYPE_CHECKING:  # annotations only: atkit.train imports this module
    from .train import Trainer

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
    bytes, and their record (path, SHA-256, size: :func:`atkit.provenance.checkpoint_record`): the hash in an
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


# ------------------------------------------------------------------------------ a trainer's checkpoints
CHECKPOINT_FORMAT = "atkit-checkpoint-1"
#: What ``best.pt`` keeps of a full checkpoint: the weights to evaluate, not the optimiser or RNG states.
BEST_KEYS = ("format", "model_name", "num_classes", "num_outputs", "epoch", "model", "ema", "averaged_model", "config",
             "best_metric")


def rng_state() -> dict[str, Any]:
    """The torch, numpy, python (and CUDA) RNG states, for an exact resume."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainer_state(trainer: "Trainer") -> dict[str, Any]:
    """Everything ``checkpoints/last.pt`` holds: enough to continue the run exactly where it is."""
    averaged = trainer.averaged_model()
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": trainer.config.model,
        "num_classes": trainer.num_classes,
        "num_outputs": getattr(trainer.model, "num_outputs", None),
        "epoch": trainer.epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "averaged_model": averaged.state_dict() if averaged is not None else None,
        "method": trainer.method.state_dict(),
        "history": trainer.history,
        "best_metric": trainer.best_metric,
        "best_epoch": trainer.best_epoch,
        "rng": rng_state(),
        "config": trainer.config.to_dict(),
        "data_fingerprint": trainer.data_fingerprint,
    }


def best_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a full checkpoint that ``best.pt`` keeps (:data:`BEST_KEYS`)."""
    return {k: state[k] for k in BEST_KEYS}


def _save_best(ckpt_dir: Path, state: Mapping[str, Any]) -> None:
    best = best_state(state)
    guarded_write(ckpt_dir / "best.pt", lambda: atomic_torch_save(best, ckpt_dir / "best.pt"))


def save_trainer_checkpoint(trainer: "Trainer", best: bool = False) -> None:
    """Write ``last.pt`` (and ``best.pt`` when ``best``) atomically; under torchrun every rank's RNG state
    goes in (exact resume), only rank 0 writes and the others wait."""
    state = trainer_state(trainer)
    if trainer.dist.is_distributed:
        state["rng_ranks"] = trainer.dist.all_gather_object(rng_state())
    if trainer.dist.is_main:
        last = trainer.ckpt_dir / "last.pt"
        guarded_write(last, lambda: atomic_torch_save(state, last))
        if best:
            _save_best(trainer.ckpt_dir, state)
    trainer.dist.barrier()


def check_checkpoint_compatible(state: dict[str, Any], model_name: str, model: nn.Module,
                                path: Optional[str | Path] = None) -> None:
    """Refuse a checkpoint of another architecture or class count, naming both."""
    where = "checkpoint" if path is None else f"checkpoint {str(path)!r}"
    if state.get("model_name") not in (None, model_name):
        raise ConfigError(f"{where} is for model {state.get('model_name')!r}, but the run uses {model_name!r}: "
                          "the checkpoint and the run's config disagree")
    expected = getattr(model, "num_outputs", None)
    if state.get("num_outputs") is not None and expected is not None and state["num_outputs"] != expected:
        raise ConfigError(f"{where} has {state['num_outputs']} outputs, but the model has {expected} "
                          "(a different class count or dummy-class head): the checkpoint and the run's config "
                          "disagree (dataset, num_classes or dummy classes)")


def restore_trainer_state(trainer: "Trainer", path: str | Path) -> None:
    """Load a ``last.pt`` into ``trainer``: weights, optimiser, averages, method state, history, RNG states.

    Refused (:class:`ConfigError`) for another architecture or class count, and for a run whose data changed
    since it started (its recorded fingerprint differs: resuming would silently mix two datasets in one run)."""
    path = Path(path)
    # best.pt cannot be resumed (no optimiser or RNG state): the remedy for a damaged last.pt is a fresh start
    # of this run, or a new run from best.pt's weights.
    resume_hint = (f"move it aside (mv {str(path)!r} {str(path) + '.damaged'!r}) and run --resume "
                   f"{str(path.parent.parent)!r} again to retrain this run from epoch 0, or start a new run with "
                   "init_checkpoint: "
                   f"{str(path.parent / 'best.pt')!r} (its weights, without the optimiser state)")
    state = require_atkit_checkpoint(load_checkpoint_file(path, trainer.device, hint=resume_hint), path,
                                     keys=("model", "optimizer", "epoch", "history", "rng"))
    check_checkpoint_compatible(state, trainer.config.model, trainer.model, path)
    recorded = state.get("data_fingerprint")
    if recorded and recorded != trainer.data_fingerprint:
        raise ConfigError(f"{str(path)!r} was trained on data with fingerprint {recorded}, but "
                          f"{trainer.config.dataset!r} with data={trainer.config.data} now gives "
                          f"{trainer.data_fingerprint}; the data changed since the run started, start a new run")
    load_weights(trainer.model, state["model"], f"checkpoint {str(path)!r}")
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.method.load_state_dict(state.get("method") or {})
    trainer.epoch = state["epoch"]
    trainer.history = state["history"]
    trainer.best_metric = state["best_metric"]
    trainer.best_epoch = state["best_epoch"]
    set_rng_state(state["rng"])
    ranks = state.get("rng_ranks")
    if trainer.dist.is_distributed and ranks and len(ranks) == trainer.dist.world_size:
        set_rng_state(ranks[trainer.dist.rank])


def init_weights_from_checkpoint(trainer: "Trainer", path: str | Path) -> None:
    """Load only the weights (and EMA) of another run's checkpoint into ``trainer``: a fine-tuning start.

    ``path`` is an atkit checkpoint or someone else's state dict (wrappers as :func:`extract_state_dict`,
    RobustBench key names and normalization buffers as :func:`atkit.models.external.fit_state_to_model`); a method
    with ``adapt_init_checkpoint`` may reshape it first (DUCAT grows a C-class head to its 2C head, DUCAT,
    Algorithm 1)."""
    raw = load_checkpoint_file(path, trainer.device)
    if isinstance(raw, dict) and str(raw.get("format", "")).startswith("atkit-checkpoint"):
        state = dict(raw)
    else:  # someone else's weights, for the run's architecture (config.model)
        source = f"init_checkpoint {str(path)!r}"
        state = {"model": fit_state_to_model(trainer.model, extract_state_dict(raw, source), source)[0]}
    adapt = getattr(trainer.method, "adapt_init_checkpoint", None)
    if adapt is not None:
        state = adapt(state, trainer.model)
    check_checkpoint_compatible(state, trainer.config.model, trainer.model, path)
    load_weights(trainer.model, state["model"], f"init_checkpoint {str(path)!r}")
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])


def repair_best_checkpoint(trainer: "Trainer") -> None:
    """A run killed between writing ``last.pt`` and ``best.pt`` of its best epoch: rebuild ``best.pt`` from the
    trainer's state (just loaded from ``last.pt``)."""
    if trainer.best_epoch is None or trainer.best_epoch != trainer.epoch:
        return
    path = trainer.ckpt_dir / "best.pt"
    if path.is_file():
        try:
            if load_checkpoint_file(path, "cpu").get("epoch") == trainer.epoch:
                return
        except Exception:  # unreadable: rewrite it
            pass
    _save_best(trainer.ckpt_dir, trainer_state(trainer))


def best_model(trainer: "Trainer") -> Optional[nn.Module]:
    """The model of the run's ``best.pt`` (its weight average or EMA when the run keeps one), or None."""
    path = trainer.ckpt_dir / "best.pt"
    if not path.is_file():
        return None
    state = load_checkpoint_file(path, trainer.device)
    model = copy.deepcopy(trainer.model)
    if state.get("averaged_model") is not None:
        model.load_state_dict(state["averaged_model"])
        return model
    if trainer.ema is not None and state.get("ema") is not None:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(trainer.config.ema_decay), use_buffers=True)
        ema.load_state_dict(state["ema"])
        return ema.module
    model.load_state_dict(state["model"])
    return model


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` (else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"no checkpoint in {str(path)!r} (looked for checkpoints/best.pt and last.pt)")
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu", which: str = "model",
               state: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Rebuild the model stored in a checkpoint (``last.pt`` or ``best.pt``), or in a run folder's best/last.

    ``which="ema"``: the EMA weights, or the method's own weight average (ReBAT, RPAT++) when it keeps one.
    ``state``: the checkpoint already loaded from ``path`` (:func:`load_checkpoint_with_record`), not read again."""
    path = resolve_checkpoint(path)
    state = require_atkit_checkpoint(load_checkpoint_file(path, device) if state is None else state, path,
                                     keys=("model", "config", "num_classes"))
    config = RunConfig.from_dict(state["config"])
    params = dict(config.model_params)
    if config.build_method().needs_dummy_classes:
        params["dummy_classes"] = True
    model = build_model(config.model, num_classes=state["num_classes"], **params)
    if which == "ema" and state.get("ema") is None and state.get("averaged_model") is not None:
        model.load_state_dict(state["averaged_model"])
    elif which == "ema" and state.get("ema") is not None:
        ema = AveragedModel(model, use_buffers=True)
        ema.load_state_dict(state["ema"])
        model = ema.module
    else:
        load_weights(model, state["model"], f"checkpoint {str(path)!r}")
    return model.to(device).eval()


__all__ = ["BEST_KEYS", "CHECKPOINT_FORMAT", "SAFE_GLOBALS", "best_model", "best_state", "check_checkpoint_compatible",
           "init_weights_from_checkpoint", "load_model", "repair_best_checkpoint", "resolve_checkpoint",
           "restore_trainer_state", "rng_state", "save_trainer_checkpoint", "set_rng_state", "trainer_state",
           "WRAPPER_KEYS", "WRAPPER_PREFIXES", "alternatives_hint", "extract_state_dict", "file_sha256",
           "check_declared_sizes", "load_checkpoint_file", "load_checkpoint_with_record", "load_weights",
           "require_atkit_checkpoint"]

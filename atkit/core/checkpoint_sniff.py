"""What a file that should be a PyTorch checkpoint really is, from its first bytes, before ``torch.load`` sees it.

The usual ways a downloaded checkpoint goes wrong each get one line that says what the file is and what to do:
an HTML page saved as ``.pt`` (a failed or blocked download: Google Drive's confirmation or quota page), a Git LFS
pointer, an empty file, a tar, gzip or zip archive around the checkpoint, a safetensors file, and a whole pickled
model (``torch.save(model)``), which ``weights_only`` loading refuses.

Nothing is unpickled: the pickle opcodes are only listed (:func:`pickletools.genops`), reading at most
:data:`SCAN_BYTES` of the pickle, and archive members are only named. :func:`check_checkpoint_file` raises the
:class:`~atkit.core.utils.ConfigError`; :func:`sniff` returns the message (None for a file that looks loadable).
"""
from __future__ import annotations

import gzip
import io
import pickletools
import re
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator, Optional

from .utils import ConfigError

#: Most bytes of a pickle whose opcodes are listed (a state dict's pickle is a few hundred KB; tensors live apart).
SCAN_BYTES = 64 * 2**20
#: Module prefixes whose classes only appear in a pickle of a whole model (an ``nn.Module`` and its layers).
MODULE_PREFIXES = ("torch.nn.modules.", "torch.nn.parallel.", "torchvision.models.", "timm.models.")
#: Globals of any checkpoint (containers, tensor and storage rebuilders), never the model's class.
_PLUMBING = ("__builtin__.", "builtins.", "collections.", "copyreg.", "_codecs.", "numpy.", "torch._utils.",
             "torch._tensor.", "torch.serialization.")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _members(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    return shown or "nothing"


def _html_title(head: bytes) -> str:
    match = re.search(rb"<title[^>]*>(.*?)</title>", head, re.IGNORECASE | re.DOTALL)
    if not match:
        return ""
    title = " ".join(match.group(1).decode("utf-8", "replace").split())[:80]
    return f" titled {title!r}" if title else ""


def _pickle_globals(stream: IO[bytes], limit: int = 3) -> list[str]:
    """``module.name`` of every class or function the first ``limit`` pickles in ``stream`` would import,
    listed from the opcodes without executing them (a legacy ``torch.save`` file is several pickles in a row)."""
    found: list[str] = []
    for _ in range(limit):
        strings: list[str] = []  # string pushes, with the memo, enough to resolve STACK_GLOBAL's two arguments
        memo: dict[int, str] = {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in _STRING_OPS:
                    strings.append(arg if isinstance(arg, str) else str(arg))
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
                elif name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # the end of the stream, a cut at SCAN_BYTES, or bytes that are not a pickle
            break
    return found


def _whole_model(globals_: list[str]) -> Optional[str]:
    """The class of the pickled model when ``globals_`` name ``nn.Module`` classes, else None."""
    if not any(g.startswith(MODULE_PREFIXES) for g in globals_):
        return None
    # The root object's class comes first, after containers and torch's tensor machinery.
    return next(g for g in globals_ if not g.startswith(_PLUMBING) and not re.fullmatch(r"torch\.\w*Storage", g))


def _zip_message(path: Path, what: str, conversion: str) -> Optional[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
            if not pickles:
                return (f"{what} is a zip archive, not a PyTorch checkpoint (it holds {_members(names)}); unzip it "
                        "and pass the checkpoint file inside")
            with zf.open(pickles[0]) as member:
                model = _whole_model(_pickle_globals(io.BytesIO(member.read(SCAN_BYTES)), limit=1))
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
        return None  # torch.load reports a damaged file with its own words
    return _pickled_model_message(what, model, conversion) if model else None


def _pickled_model_message(what: str, model: str, conversion: str) -> str:
    advice = conversion or "where you trust its code, save its state dict instead: torch.save(model.state_dict(), F)"
    return (f"{what} is a whole pickled model (torch.save(model), class {model}), not a state dict: loading it "
            f"would run its code, which atkit never does; {advice}")


def sniff(path: str | Path, conversion: str = "") -> Optional[str]:
    """One line saying what ``path`` is when it is clearly not a loadable checkpoint, and what to do; None when it
    looks like a PyTorch checkpoint (``torch.load`` then has the last word). ``conversion`` is the advice given
    for a whole pickled model (default: save its state dict instead)."""
    path = Path(path)
    what = f"checkpoint {str(path)!r}"
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return f"{what} is empty (0 bytes): the download or copy failed; fetch the file again"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or (text.startswith(b"<") and b"<html" in text):
        return (f"{what} is an HTML page{_html_title(head)}, not a checkpoint: the download saved a web page (for "
                "Google Drive a confirmation or quota page); download the file again, e.g. with gdown, and check "
                "its size")
    if text.startswith(b"version https://git-lfs"):
        return (f"{what} is a Git LFS pointer, not the file it points to; run `git lfs pull` in its repository, or "
                "download the file itself")
    if len(head) > 262 and head[257:262] == b"ustar":
        return _tar_message(path, what, gzipped=False)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as g:
            try:
                inner = g.read(512)
            except (OSError, EOFError, zlib.error):  # a damaged or cut stream: still gzip, just not readable
                inner = b""
        if len(inner) > 262 and inner[257:262] == b"ustar":
            return _tar_message(path, what, gzipped=True)
        return f"{what} is gzip-compressed; decompress it (gunzip) and pass the file inside"
    if head[:4] == b"PK\x03\x04":
        return _zip_message(path, what, conversion)
    if len(head) > 10 and head[8:10] == b'{"' and struct.unpack("<Q", head[:8])[0] < 100 * 2**20:
        return (f"{what} is a safetensors file; atkit reads PyTorch state dicts: convert it once with python -c "
                f"\"import torch; from safetensors.torch import load_file; torch.save(load_file('{path}'), "
                f"'{path.with_suffix('.pt')}')\"")
    if head[:1] == b"\x80":  # a pickle protocol header: the legacy (non-zip) torch.save format
        with open(path, "rb") as f:
            # magic number, protocol, system info, then the object: the fourth pickle holds the classes
            model = _whole_model(_pickle_globals(io.BytesIO(f.read(SCAN_BYTES)), limit=5))
        if model:
            return _pickled_model_message(what, model, conversion)
    return None


def _tar_message(path: Path, what: str, gzipped: bool) -> str:
    kind = "a gzip-compressed tar archive" if gzipped else "a tar archive"
    try:
        with tarfile.open(path, "r:gz" if gzipped else "r:") as tf:
            names = list(_first_names(tf))
    except (tarfile.TarError, OSError, EOFError):
        names = []
    if {"storages", "tensors", "pickle"} <= set(names):
        return (f"{what} is a checkpoint in PyTorch's tar format of before 2017, which atkit does not read; load "
                "and save it again with the PyTorch it was written with (torch.save of its state_dict)")
    unpack = "tar -xzf" if gzipped else "tar -xf"
    return (f"{what} is {kind}, not a PyTorch checkpoint (it holds {_members(names)}); unpack it ({unpack} FILE) "
            "and pass the .pt/.pth file inside")


def _first_names(tf: tarfile.TarFile, limit: int = 50) -> Iterator[str]:
    for i, member in enumerate(tf):
        if i >= limit:
            return
        yield member.name


def check_checkpoint_file(path: str | Path, conversion: str = "") -> None:
    """Raise :class:`ConfigError` with :func:`sniff`'s line when ``path`` is clearly not a loadable checkpoint."""
    message = sniff(path, conversion)
    if message:
        raise ConfigError(message)


__all__ = ["MODULE_PREFIXES", "SCAN_BYTES", "check_checkpoint_file", "sniff"]

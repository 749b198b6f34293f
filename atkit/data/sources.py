"""Where datasets come from: one ``name -> loader`` registry, :data:`DATASETS`, and :func:`load_dataset`.

Registered names: ``cifar10``, ``cifar100``, ``svhn`` (torchvision files), ``tiny-imagenet`` (the standard
``tiny-imagenet-200`` folder), ``folder`` (any ImageFolder-style tree with ``train/`` and ``test/``, decoded once
and cached on disk) and ``synthetic`` (built-in, offline, with a designed accuracy-robustness trade-off; see
:func:`atkit.data.synthetic.make_synthetic`). A loader's options are its keyword arguments
(``DATASETS.options(name)``): :func:`check_dataset_options` refuses any other before anything is loaded, so a new
loader is one decorated function::

    @DATASETS.register("my-set")
    def load_my_set(root=None, image_size: int = 32) -> ImageDataset: ...

Order: folder-based splits are stored in one fixed shuffled order (:func:`_storage_order`), not ImageFolder's
class order, so no slice of a split is a single class.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from atkit.core.registry import Registry
from atkit.core.utils import ConfigError, atomic_torch_save, atomic_write_text, unknown_name_error

from .dataset import ImageDataset
from .synthetic import check_synthetic_options, make_synthetic

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "LOAD_KEYWORDS",
    "TINY_IMAGENET_URL",
    "check_dataset_options",
    "dataset_options",
    "default_data_root",
    "load_dataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
# Bump when the cache layout or the decoding changes, so old caches are not reused.
_CACHE_VERSION = 3  # 2: files stored in the fixed shuffled order of _storage_order; 3: 16-bit greyscale scaled
# Folder-based splits are stored in one fixed pseudo-random order (not the class-folder order), so
# that no slice of a split is one class. The same for every user and run: part of the data itself.
_STORAGE_ORDER_SEED = 0x0A7C1F

#: ``name -> loader``: a function returning an :class:`ImageDataset`, whose keyword arguments are its options.
DATASETS = Registry("dataset")
#: Other spellings :func:`load_dataset` accepts for a registered name.
_ALIASES = {"tinyimagenet": "tiny-imagenet", "tiny-imagenet-200": "tiny-imagenet", "imagefolder": "folder"}
#: :func:`load_dataset`'s own keywords: given to a loader whose signature has them, accepted (and unused) by others.
LOAD_KEYWORDS = ("root", "download", "cache_dir")


def _storage_order(files: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """``files``/``labels`` in the fixed shuffled storage order (see ``_STORAGE_ORDER_SEED``)."""
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(_STORAGE_ORDER_SEED)).tolist()
    return [files[i] for i in perm], [labels[i] for i in perm]


# ----------------------------------------------------------------------------------------------
# image folders (ImageFolder layout, Tiny-ImageNet) with an on-disk cache of decoded tensors
# ----------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """``$ATKIT_DATA_DIR`` if set, else ``./data`` (git-ignored)."""
    return Path(os.environ.get("ATKIT_DATA_DIR", "data"))


_OPEN_LOCK = threading.Lock()
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _open_image(path: str) -> Any:
    """``PIL.Image.open`` that treats an image over PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``, a possible
    decompression bomb) as an error, not a warning: only the header is read before the refusal."""
    from PIL import Image  # deferred: PIL is needed only to decode image folders

    with _OPEN_LOCK, warnings.catch_warnings():  # the lock: warning filters are global, decoding is threaded
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _eight_bit_rgb(im: Any, path: str) -> Any:
    """``im`` as 8-bit RGB. 16-bit greyscale is scaled (``v * 255 / 65535``; PIL's own conversion clips it, which
    turns almost every pixel white); 32-bit integer or float pixels, whose range is unknown, are refused."""
    from PIL import Image  # deferred, as above

    if im.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(im, dtype=np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F"):
        raise ConfigError(f"image file {path!r} has {'32-bit integer' if im.mode == 'I' else 'floating-point'} "
                          "pixels of unknown range; convert it to an 8- or 16-bit image")
    return im.convert("RGB")


def _decode_image(path: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image file to an ``(H, W, 3)`` uint8 array, resized (bilinear) to ``size`` = (H, W). 16-bit
    greyscale is scaled to 8 bits (:func:`_eight_bit_rgb`); an image over PIL's pixel limit is refused naming the
    file (a decompression bomb would otherwise take all the memory)."""
    from PIL import Image, UnidentifiedImageError  # deferred: PIL is needed only to decode image folders

    try:
        with _open_image(path) as im:
            im = _eight_bit_rgb(im, path)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ConfigError(f"image file {path!r} is refused: {str(err).rstrip('.')}; replace or delete it (or raise "
                          "PIL.Image.MAX_IMAGE_PIXELS if you trust it)") from None
    except ConfigError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # corrupt, truncated, not an image
        raise ConfigError(f"image file {path!r} cannot be decoded ({err}); replace or delete it") from None


def _decode_all(files: Sequence[str], size: tuple[int, int] | None, workers: int | None) -> torch.Tensor:
    """Decode ``files`` into one ``(N, 3, H, W)`` uint8 tensor, with a thread pool (PIL frees the GIL)."""
    if not files:
        raise ConfigError("no image files to decode")
    first = _decode_image(files[0], size)
    out = np.empty((len(files),) + first.shape, dtype=np.uint8)
    out[0] = first

    def work(i: int) -> None:
        arr = _decode_image(files[i], size)
        if arr.shape != first.shape:
            raise ConfigError(
                f"image {files[i]} has size {arr.shape[1]}x{arr.shape[0]}, but {files[0]} has "
                f"{first.shape[1]}x{first.shape[0]}; pass image_size=... to resize all images"
            )
        out[i] = arr

    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(files) < 64:
        for i in range(1, len(files)):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # list() re-raises the first worker exception here.
            list(pool.map(work, range(1, len(files)), chunksize=256))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _scan_class_dirs(split_dir: Path, class_to_idx: dict[str, int] | None) -> tuple[list[str], list[int], list[str]]:
    """Files and labels of an ImageFolder split (``split_dir/<class>/**/image``), sorted."""
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_to_idx is None:
        class_to_idx = {c: i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for c in classes:
        if c not in class_to_idx:
            raise ConfigError(
                f"class folder {split_dir / c} does not exist in the training split; "
                f"known classes: {', '.join(sorted(class_to_idx))}"
            )
        found = sorted(str(p) for p in (split_dir / c).rglob("*") if _is_image(p))
        files += found
        labels += [class_to_idx[c]] * len(found)
    return files, labels, classes


def _file_signature(files: Sequence[str], base: Path) -> list[tuple[str, int, int]]:
    sig = []
    for f in files:
        st = os.stat(f)
        sig.append((os.path.relpath(f, base), st.st_size, st.st_mtime_ns))
    return sig


def _writable_cache_dir(preferred: Path) -> Path | None:
    for cand in (preferred, Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atkit"):
        try:
            cand.mkdir(parents=True, exist_ok=True)
            probe = cand / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return cand
        except OSError:
            continue
    return None


def _cached_decode(
    kind: str,
    root: Path,
    splits: dict[str, tuple[list[str], list[int]]],
    size: tuple[int, int] | None,
    cache_dir: Path | None,
    workers: int | None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode each split's files once; reuse the cache while paths, sizes and mtimes are unchanged.

    Cache file ``<cache_dir>/<kind>-<root+size hash>-<content hash>.pt`` (written atomically). The
    content hash covers every file's relative path, byte size and mtime, the labels and the resize
    target, so any change to the folder leads to a re-decode; the stale cache of the same root and
    size is then removed. An unwritable ``cache_dir`` falls back to ``~/.cache/atkit``.
    """
    root = root.resolve()
    key_obj = {
        "version": _CACHE_VERSION,
        "kind": kind,
        "size": list(size) if size else None,
        "splits": {s: [_file_signature(f, root), lab] for s, (f, lab) in sorted(splits.items())},
    }
    content = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:20]
    # Caches of the same root and resize target replace each other; other sizes keep their own.
    root_tag = hashlib.sha256(f"{root}|{size}".encode()).hexdigest()[:8]
    cdir = _writable_cache_dir(cache_dir if cache_dir is not None else root / ".atkit_cache")
    path = cdir / f"{kind}-{root_tag}-{content}.pt" if cdir is not None else None

    if path is not None and path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == content:
                return {s: (blob[s + "_x"], blob[s + "_y"]) for s in splits}
        except Exception as err:  # corrupt or foreign file: decode again
            warnings.warn(f"ignoring unreadable dataset cache {path}: {err}")

    out = {}
    for s, (files, labels) in splits.items():
        out[s] = (_decode_all(files, size, workers), torch.tensor(labels, dtype=torch.int64))
    if path is not None:
        blob = {"key": content, "root": str(root)}
        for s, (x, y) in out.items():
            blob[s + "_x"], blob[s + "_y"] = x, y
        atomic_torch_save(blob, path)
        for stale in cdir.glob(f"{kind}-{root_tag}-*.pt"):
            if stale != path:
                try:
                    stale.unlink()
                except OSError:
                    pass
    else:
        warnings.warn(f"no writable cache folder for {root}; decoded images are not cached")
    return out


def _as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size={image_size!r} must be a positive int or (height, width)")
    return size  # type: ignore[return-value]


_FOLDER_LAYOUT = (
    "expected an ImageFolder tree: <root>/train/<class>/<image> and <root>/test/<class>/<image> "
    "(png/jpg/...), e.g. an unpacked JPEG copy of CIFAR-10: cifar10-jpeg/{train,test}/<class>/NNNN.jpg"
)


def _extract_archive(archive: Path, data_root: Path) -> Path:
    """Unpack a .tar(.gz)/.tgz/.zip once into ``data_root/<archive stem>`` and return that folder."""
    stem = archive.name
    for suf in (".tar.gz", ".tgz", ".tar", ".zip"):
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
    dest = data_root / stem
    marker = dest / ".atkit_extracted"
    st = archive.stat()
    stamp = f"{archive.resolve()} {st.st_size} {st.st_mtime_ns}"
    if marker.exists() and marker.read_text() == stamp:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    atomic_write_text(marker, stamp)
    return dest


def _find_split_root(root: Path) -> Path | None:
    """``root`` if it has ``train/``, else its only child folder that has one (an unpacked archive)."""
    if (root / "train").is_dir():
        return root
    kids = [d for d in root.iterdir() if d.is_dir() and (d / "train").is_dir()] if root.is_dir() else []
    return kids[0] if len(kids) == 1 else None


@DATASETS.register("folder")
def _load_folder(
    root: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    num_workers: int | None = None,
    test_split: str | None = None,
) -> ImageDataset:
    """An ImageFolder tree ``root/{train,test}/<class>/<image>`` (or an archive of it, unpacked once into the data
    root); ``test_split`` names the test folder (default ``test``, else ``val``), ``image_size`` resizes
    (bilinear) every image, ``num_workers`` decoding threads. Decoded once and cached (:func:`_cached_decode`)."""
    if root is None:
        raise ConfigError("dataset 'folder' needs root=PATH; " + _FOLDER_LAYOUT)
    given = Path(root).expanduser()
    if not given.exists():
        raise ConfigError(f"dataset folder {str(given)!r} does not exist; " + _FOLDER_LAYOUT)
    if given.is_file():
        given = _extract_archive(given, default_data_root())
    base = _find_split_root(given)
    if base is None:
        raise ConfigError(f"no train/ folder in {str(given)!r}; " + _FOLDER_LAYOUT)
    if test_split is None:
        test_split = "test" if (base / "test").is_dir() else "val"
    if not (base / test_split).is_dir():
        raise ConfigError(f"no {test_split}/ folder in {str(base)!r}; " + _FOLDER_LAYOUT)

    train_files, train_labels, classes = _scan_class_dirs(base / "train", None)
    if not train_files:
        raise ConfigError(f"no images found under {str(base / 'train')!r}; " + _FOLDER_LAYOUT)
    test_files, test_labels, _ = _scan_class_dirs(base / test_split, {c: i for i, c in enumerate(classes)})
    if not test_files:
        raise ConfigError(f"no images found under {str(base / test_split)!r}; " + _FOLDER_LAYOUT)
    size = _as_size(image_size)
    data = _cached_decode(
        "folder", base,
        {"train": _storage_order(train_files, train_labels), "test": _storage_order(test_files, test_labels)},
        size, Path(cache_dir) if cache_dir is not None else None, num_workers,
    )
    return ImageDataset(
        train_x=data["train"][0], train_y=data["train"][1], test_x=data["test"][0], test_y=data["test"][1],
        num_classes=len(classes), class_names=classes, name=f"folder:{base.name}",
        meta={"root": str(base.resolve()), "test_split": test_split},
    )


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_LAYOUT = (
    "expected tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
    "val/images/*.JPEG, val/val_annotations.txt} (the unpacked tiny-imagenet-200.zip from "
    f"{TINY_IMAGENET_URL})"
)


@DATASETS.register("tiny-imagenet")
def _load_tiny_imagenet(
    root: str | os.PathLike | None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    num_workers: int | None = None,
) -> ImageDataset:
    """Tiny-ImageNet (64×64, 200 classes): train = train/, test = the labelled val/ split.

    Labels follow the sorted wnids (what ImageFolder gives on the train folder); class names are
    the first synonym in words.txt. A val/ folder already reorganised into ``val/<wnid>/`` works too.
    """
    parent = Path(root).expanduser() if root is not None else default_data_root()
    base = parent if (parent / "wnids.txt").exists() else parent / "tiny-imagenet-200"
    if not (base / "wnids.txt").exists() and download:
        try:
            from torchvision.datasets.utils import download_and_extract_archive  # deferred: heavy, optional here

            download_and_extract_archive(TINY_IMAGENET_URL, download_root=str(parent))
        except Exception as err:
            raise ConfigError(
                f"Tiny-ImageNet is not in {str(base)!r} and the download failed ({err}); " + _TINY_LAYOUT
            ) from err
    if not (base / "wnids.txt").exists():
        raise ConfigError(f"Tiny-ImageNet not found at {str(base)!r}; " + _TINY_LAYOUT)

    wnids = sorted(w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip())
    idx = {w: i for i, w in enumerate(wnids)}
    words: dict[str, str] = {}
    if (base / "words.txt").exists():
        for line in (base / "words.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                words[parts[0].strip()] = parts[1].split(",")[0].strip()

    train_files: list[str] = []
    train_labels: list[int] = []
    for w in wnids:
        d = base / "train" / w
        if not d.is_dir():
            raise ConfigError(f"missing training folder {str(d)!r}; " + _TINY_LAYOUT)
        found = sorted(str(p) for p in d.rglob("*") if _is_image(p))
        train_files += found
        train_labels += [idx[w]] * len(found)

    ann = base / "val" / "val_annotations.txt"
    test_files: list[str] = []
    test_labels: list[int] = []
    if ann.exists():
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in idx:
                raise ConfigError(f"{ann}: unknown wnid {parts[1]!r} (not in wnids.txt)")
            test_files.append(str(base / "val" / "images" / parts[0]))
            test_labels.append(idx[parts[1]])
        missing = [f for f in test_files if not os.path.exists(f)]
        if missing:
            raise ConfigError(f"{len(missing)} files listed in {ann} are missing, e.g. {missing[0]!r}")
    elif (base / "val" / "images").is_dir():  # the zip's layout without its label file
        raise ConfigError(f"Tiny-ImageNet: {str(ann)!r} is missing (it labels the images in val/images); "
                          + _TINY_LAYOUT)
    elif (base / "val").is_dir():
        test_files, test_labels, _ = _scan_class_dirs(base / "val", idx)
    if not train_files or not test_files:
        raise ConfigError(f"no images found in {str(base)!r}; " + _TINY_LAYOUT)

    order = sorted(range(len(test_files)), key=lambda i: test_files[i])
    test_files = [test_files[i] for i in order]
    test_labels = [test_labels[i] for i in order]
    data = _cached_decode(
        "tiny-imagenet", base,
        {"train": _storage_order(train_files, train_labels), "test": _storage_order(test_files, test_labels)},
        _as_size(image_size), Path(cache_dir) if cache_dir is not None else None, num_workers,
    )
    return ImageDataset(
        train_x=data["train"][0], train_y=data["train"][1], test_x=data["test"][0], test_y=data["test"][1],
        num_classes=len(wnids), class_names=[words.get(w, w) for w in wnids], name="tiny-imagenet",
        meta={"root": str(base.resolve()), "wnids": wnids},
    )


# ----------------------------------------------------------------------------------------------
# torchvision datasets
# ----------------------------------------------------------------------------------------------

_TV_FILES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"),
    "svhn": ("train_32x32.mat and test_32x32.mat", "the cropped-digits .mat files from http://ufldl.stanford.edu/housenumbers/"),
}


def _load_torchvision(name: str, root: str | os.PathLike | None, download: bool) -> ImageDataset:
    base = Path(root).expanduser() if root is not None else default_data_root()
    where, source = _TV_FILES[name]
    try:
        import torchvision.datasets as tvd  # deferred: torchvision is heavy and only these loaders use it

        if name == "svhn":
            try:
                import scipy.io  # noqa: F401  (torchvision's SVHN reader needs it)
            except ImportError as err:
                raise ConfigError("loading SVHN needs scipy (pip install scipy)") from err
            tr = tvd.SVHN(str(base), split="train", download=download)
            te = tvd.SVHN(str(base), split="test", download=download)
            # torchvision already stores SVHN as (N, 3, H, W) uint8 and maps digit 0's label 10 -> 0.
            tx, ty = torch.from_numpy(np.ascontiguousarray(tr.data)), torch.as_tensor(tr.labels, dtype=torch.int64)
            vx, vy = torch.from_numpy(np.ascontiguousarray(te.data)), torch.as_tensor(te.labels, dtype=torch.int64)
            classes = [str(d) for d in range(10)]
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            tr = cls(str(base), train=True, download=download)
            te = cls(str(base), train=False, download=download)
            # (N, H, W, C) numpy -> (N, C, H, W) tensor, once.
            tx = torch.from_numpy(tr.data).permute(0, 3, 1, 2).contiguous()
            vx = torch.from_numpy(te.data).permute(0, 3, 1, 2).contiguous()
            ty = torch.as_tensor(tr.targets, dtype=torch.int64)
            vy = torch.as_tensor(te.targets, dtype=torch.int64)
            classes = list(tr.classes)
    except ConfigError:
        raise
    except Exception as err:
        how = "download=True failed" if download else "download=False"
        raise ConfigError(
            f"could not load {name} from {str(base)!r} ({how}: {type(err).__name__}: {err}). "
            f"Put {where} under {str(base)!r} (unpack {source}), "
            f"or allow download=True where the network is reachable."
        ) from err
    return ImageDataset(
        train_x=tx, train_y=ty, test_x=vx, test_y=vy, num_classes=len(classes), class_names=classes,
        name=name, meta={"root": str(base.resolve())},
    )


@DATASETS.register("cifar10")
def _load_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-10 through torchvision: 50,000 training and 10,000 test images, 32×32, 10 classes."""
    return _load_torchvision("cifar10", root, download)


@DATASETS.register("cifar100")
def _load_cifar100(root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-100 through torchvision: 50,000 training and 10,000 test images, 32×32, 100 classes."""
    return _load_torchvision("cifar100", root, download)


@DATASETS.register("svhn")
def _load_svhn(root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """SVHN cropped digits through torchvision: 73,257 training and 26,032 test images, 32×32, 10 classes."""
    return _load_torchvision("svhn", root, download)


DATASETS.register("synthetic")(make_synthetic)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    """``name`` itself if registered, else its lower-case, dashed spelling or alias (``tiny_imagenet``)."""
    if name in DATASETS:
        return name
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise unknown_name_error("dataset", name, DATASETS)
    return key


def dataset_options(name: str) -> list[str]:
    """The options dataset ``name`` takes: its loader's keyword arguments (``DATASETS.options``), sorted."""
    return sorted(DATASETS.options(_canonical_name(name)))


def check_dataset_options(name: str, options: dict[str, Any]) -> str:
    """Refuse an unknown dataset name or option without loading anything; returns the canonical dataset name.

    Accepted: the loader's keyword arguments (:func:`dataset_options`) and :data:`LOAD_KEYWORDS`. Synthetic options
    are type-checked and their memory is estimated against what is available."""
    key = _canonical_name(name)
    accepted = dataset_options(key)
    bad = sorted(set(options) - set(accepted) - set(LOAD_KEYWORDS))
    if bad:
        raise ConfigError(
            f"dataset {key!r} does not take option(s) {', '.join(map(repr, bad))}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    if DATASETS[key] is make_synthetic:
        check_synthetic_options(options)
    return key


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    **kw: Any,
) -> ImageDataset:
    """Load a dataset by name into memory as uint8 NCHW tensors (see the module docstring).

    ``root``: folder of the files (default :func:`default_data_root`); for ``folder`` the tree with
    ``train/`` and ``test/`` (or an archive of it, unpacked once into the data root). ``download``:
    let torchvision fetch missing files. ``cache_dir``: where ``folder``/``tiny-imagenet`` keep
    decoded tensors (default ``<root>/.atkit_cache``). These three go to a loader whose signature has them. Extra
    options are the loader's own keyword arguments (:func:`dataset_options`), e.g. those of
    :func:`make_synthetic` for ``synthetic`` and ``image_size``, ``num_workers``, ``test_split`` for ``folder``.
    """
    key = check_dataset_options(name, kw)
    own = {"root": root, "download": download, "cache_dir": cache_dir}
    takes = DATASETS.options(key)
    return DATASETS[key](**{k: v for k, v in own.items() if k in takes}, **kw)

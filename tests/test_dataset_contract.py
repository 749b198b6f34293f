"""Every registered dataset keeps the dataset contract (one test over the registry, as for methods, models,
evaluation attacks and experiments): offline from a tiny source of its own format, it loads into a valid
:class:`~atkit.data.ImageDataset` named after its registry entry, lists exactly its loader's options, refuses an
unknown option in one line before any work, has a stable fingerprint and gives class-stratified evaluation subsets.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atkit.core.utils import ConfigError
from atkit.data import DATASETS, ImageDataset, dataset_options, load_dataset
from helpers import write_tiny_imagenet


class _FakeCifar:
    """torchvision's CIFAR-10/100 classes as atkit reads them (``data`` NHWC uint8, ``targets``, ``classes``)."""

    n_classes = 10

    def __init__(self, root, train=True, download=False):
        n = 12 if train else 6
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % self.n_classes for i in range(n)]
        self.classes = [f"class{i}" for i in range(self.n_classes)]


class _FakeCifar100(_FakeCifar):
    n_classes = 100


class _FakeSVHN:
    """torchvision's SVHN as atkit reads it (``data`` NCHW uint8, ``labels`` with digit 0 already 0)."""

    def __init__(self, root, split="train", download=False):
        n = 10 if split == "train" else 5
        self.data = np.random.default_rng(2).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        self.labels = np.arange(n) % 10


def _folder(tmp_path: Path, monkeypatch) -> dict:
    rng = np.random.default_rng(0)
    for split, k in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            for i in range(k):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "tree" / split / cls / f"{i}.png")
    return {"root": tmp_path / "tree", "cache_dir": tmp_path / "cache"}


def _tiny_imagenet(tmp_path: Path, monkeypatch) -> dict:
    write_tiny_imagenet(tmp_path)
    return {"root": tmp_path, "download": False, "cache_dir": tmp_path / "cache"}


def _torchvision(name: str, fake: type):
    def source(tmp_path: Path, monkeypatch) -> dict:
        import torchvision.datasets as tvd

        monkeypatch.setattr(tvd, name, fake)
        return {"root": tmp_path, "download": False}

    return source


def _npz(tmp_path: Path, monkeypatch) -> dict:
    rng = np.random.default_rng(3)
    for split, n in (("train", 12), ("test", 6)):
        np.savez(tmp_path / f"{split}.npz", x=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), y=np.arange(n) % 3)
    (tmp_path / "classes.txt").write_text("plane\ncar\nbird\n")
    return {"root": tmp_path}


#: How to make each registered dataset offline and tiny. A new dataset adds its source here.
OFFLINE_SOURCES = {
    "synthetic": lambda tmp_path, monkeypatch: {"n_train": 40, "n_test": 20, "image_size": 8},
    "folder": _folder,
    "tiny-imagenet": _tiny_imagenet,
    "cifar10": _torchvision("CIFAR10", _FakeCifar),
    "cifar100": _torchvision("CIFAR100", _FakeCifar100),
    "svhn": _torchvision("SVHN", _FakeSVHN),
    "npz": _npz,
}


def test_every_registered_dataset_has_an_offline_source():
    assert set(DATASETS) == set(OFFLINE_SOURCES), "give a new dataset an offline source in OFFLINE_SOURCES"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_keeps_the_dataset_contract(name, tmp_path, monkeypatch):
    options = OFFLINE_SOURCES[name](tmp_path, monkeypatch)
    # Its options are its loader's keyword arguments, and nothing else is accepted (before any work).
    assert dataset_options(name) == sorted(inspect.signature(DATASETS[name]).parameters)
    called, real = [], DATASETS[name]

    @functools.wraps(real)  # the same signature, so the same options
    def counting(*args, **kwargs):
        called.append(1)
        return real(*args, **kwargs)

    monkeypatch.setitem(DATASETS, name, counting)
    with pytest.raises(ConfigError, match=rf"^dataset '{name}' does not take option\(s\) 'no_such_option'; "
                                          r"accepted: [^\n]+$"):
        load_dataset(name, no_such_option=1, **options)
    assert not called

    ds = load_dataset(name, **options)
    assert isinstance(ds, ImageDataset) and ds.name.split(":")[0] == name and called  # folder: "folder:<root>"
    assert len(ds.class_names) == ds.num_classes >= 2
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3) and len(x) == len(y) > 0
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < ds.num_classes
    assert ds.train_x.shape[1:] == ds.test_x.shape[1:]
    # The fingerprint is of the data: the same load gives the same one, other bytes another.
    again = load_dataset(name, **options)
    assert again.fingerprint() == ds.fingerprint() and torch.equal(again.test_x, ds.test_x)
    changed = ImageDataset(train_x=ds.train_x, train_y=ds.train_y, test_x=ds.test_x ^ 1, test_y=ds.test_y,
                           num_classes=ds.num_classes, class_names=ds.class_names, name=ds.name)
    assert changed.fingerprint() != ds.fingerprint()
    # Evaluation subsets are class-stratified and recorded by index.
    n = min(4, len(ds.test_y))
    x, y, idx = ds.eval_subset(n)
    assert len(y) == n and torch.equal(ds.test_y[idx], y) and torch.equal(ds.test_x[idx], x)
    present = torch.unique(ds.test_y)
    assert len(torch.unique(y)) == min(n, len(present))

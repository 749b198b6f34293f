"""The dataset container: :class:`ImageDataset` (uint8 tensors held in memory), its validation split, its
fingerprint, and the class-stratified, seeded subsets every evaluation or analysis takes.

Every dataset is decoded once into ``uint8`` NCHW tensors (CPU) with ``int64`` labels; models see
float images in [0, 1] (docs/methods.md, common protocol: no normalization outside the model).

Order: folder-based splits (``folder``, ``tiny-imagenet``) are stored in one fixed shuffled order
(:mod:`atkit.data.sources`), not ImageFolder's class order, so no slice of a split is a single class. Every
evaluation or analysis subset is still taken with :meth:`ImageDataset.eval_subset` (class-stratified, seeded,
the indices recorded), never as "the first n".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import torch

from atkit.core.utils import ConfigError

__all__ = ["ImageDataset", "split_validation", "stratified_indices", "stratified_order", "test_images_record",
           "to_float_images"]


@dataclass
class ImageDataset:
    """A labelled image dataset held in memory.

    ``*_x`` are ``uint8`` tensors ``(N, C, H, W)`` on the CPU, ``*_y`` are ``int64`` labels in
    ``[0, num_classes)``. ``val_x``/``val_y`` are set by :meth:`split_validation` (docs/methods.md, common protocol:
    1,000 held-out training images as the cleaner model-selection alternative to test-set
    selection). ``image_size`` is ``H`` for square images, else ``(H, W)``; it is filled in from the
    tensors. ``meta`` holds provenance (root folder, generator parameters, ...).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: list[str]
    name: str
    image_size: int | tuple[int, int] | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        splits = [("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)]
        if (self.val_x is None) != (self.val_y is None):
            raise ConfigError("val_x and val_y must be given together")
        if self.val_x is not None:
            splits.append(("val", self.val_x, self.val_y))
        shape = None
        for split, x, y in splits:
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ConfigError(f"{split}_x must be a uint8 (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise ConfigError(
                    f"{split}_y must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}"
                )
            if shape is None:
                shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != shape:
                raise ConfigError(f"{split}_x has image shape {tuple(x.shape[1:])}, train has {shape}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ConfigError(
                    f"{split}_y has labels in [{int(y.min())}, {int(y.max())}], "
                    f"outside [0, {self.num_classes}) for num_classes={self.num_classes}"
                )
        if len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        h, w = self.train_x.shape[2], self.train_x.shape[3]
        self.image_size = int(h) if h == w else (int(h), int(w))

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in [0, 1], e.g. for a model's ``normalize``."""
        total = torch.zeros(self.channels, dtype=torch.float64)
        total_sq = torch.zeros(self.channels, dtype=torch.float64)
        for start in range(0, len(self.train_x), 4096):  # chunks keep the float copy small
            xb = self.train_x[start : start + 4096].to(torch.float64) / 255.0
            total += xb.sum(dim=(0, 2, 3))
            total_sq += (xb**2).sum(dim=(0, 2, 3))
        count = len(self.train_x) * self.train_x.shape[2] * self.train_x.shape[3]
        mean = total / count
        std = (total_sq / count - mean**2).clamp_min(0).sqrt()
        return mean.tolist(), std.tolist()

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 characters) of every split's images and labels and the class count.

        Recorded by each training run so that a finished run is reused, and a run resumed, only on
        the very data it was trained on: a configuration names a dataset, but the bytes behind the
        name can change (a newer synthetic generator, a re-extracted folder).
        """
        h = hashlib.sha256(f"{self.num_classes}|{tuple(self.train_x.shape[1:])}".encode())
        splits = [self.train_x, self.train_y, self.test_x, self.test_y]
        if self.val_x is not None:
            splits += [self.val_x, self.val_y]
        for t in splits:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy())
        return h.hexdigest()[:16]

    def split_validation(self, n_val: int = 1000, seed: int = 0) -> "ImageDataset":
        """Hold out ``n_val`` random training images as ``val_x``/``val_y`` (see :func:`split_validation`)."""
        return split_validation(self, n_val=n_val, seed=seed)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageDataset":
        """A class-stratified subset (deterministic in ``seed``) of the train and/or test split, for quick runs."""
        out = self
        if n_train is not None:
            idx = stratified_indices(self.train_y, n_train, seed=seed, what="n_train")
            out = replace(out, train_x=out.train_x[idx], train_y=out.train_y[idx])
        if n_test is not None:
            idx = stratified_indices(self.test_y, n_test, seed=seed, what="n_test")
            out = replace(out, test_x=out.test_x[idx], test_y=out.test_y[idx])
        return out

    def eval_subset(
        self, n: int | None = None, split: str = "test", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, indices)`` of ``n`` images of ``split`` (``train``, ``val`` or ``test``) for evaluation or analysis.

        ``n=None`` (or the split's size) is the whole split in stored order. A smaller ``n`` is the
        class-stratified, seeded subset of :func:`stratified_indices`: the same images for every model
        evaluated with the same ``(n, seed)``, every class in proportion, and each prefix of it is
        stratified too. ``x`` stays uint8; ``indices`` index the split and belong in every result.
        """
        xs = {"train": self.train_x, "test": self.test_x, "val": self.val_x}
        ys = {"train": self.train_y, "test": self.test_y, "val": self.val_y}
        if split not in xs:
            raise ConfigError(f"split={split!r} is not one of 'train', 'val', 'test'")
        x, y = xs[split], ys[split]
        if x is None:
            raise ConfigError(f"this dataset has no {split!r} split (split_validation makes 'val')")
        if n is None or int(n) == len(y):
            idx = torch.arange(len(y))
        else:
            idx = stratified_indices(y, n, seed=seed, what="n")
        return x[idx], y[idx], idx

    def __repr__(self) -> str:
        val = f", val={len(self.val_y)}" if self.val_y is not None else ""
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.train_y)}, test={len(self.test_y)}{val}, "
            f"num_classes={self.num_classes}, shape={tuple(self.train_x.shape[1:])})"
        )


def stratified_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A seeded ordering of all indices in which every prefix holds every class in proportion.

    Each class's indices are shuffled (``seed``); the ``r``-th of a class of ``n_c`` images gets the key
    ``(r + u) / n_c`` with one seeded offset ``u`` in [0, 1) per class, and the indices are sorted by key.
    The first ``k`` of the order then hold ``k·n_c/N`` images of each class up to one (a largest-remainder
    split), for every ``k``: subsets of growing size are nested, and none follows the stored class order.
    """
    labels = torch.as_tensor(labels).long().cpu()
    gen = torch.Generator().manual_seed(_mix_seed(int(seed), 0x57A7))
    keys = torch.empty(len(labels), dtype=torch.float64)
    classes = torch.unique(labels)
    offsets = torch.rand(len(classes), generator=gen, dtype=torch.float64)
    for c, u in zip(classes.tolist(), offsets.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        keys[members] = (torch.arange(len(members), dtype=torch.float64) + u) / len(members)
    return torch.argsort(keys, stable=True)


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0, what: str = "n") -> torch.Tensor:
    """The first ``n`` of :func:`stratified_order`: a class-stratified, seeded subset of ``labels``' indices."""
    total = len(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < int(n) <= total:
        raise ConfigError(f"{what}={n!r} must be an integer in [1, {total}]")
    return stratified_order(labels, seed)[: int(n)]


def split_validation(ds: ImageDataset, n_val: int = 1000, seed: int = 0) -> ImageDataset:
    """Move ``n_val`` training images, chosen uniformly at random from ``seed``, into ``val_x``/``val_y``.

    docs/methods.md, common protocol ("checkpoint selection"): the papers select the best epoch on the test set; a
    held-out split of 1,000 training images is the cleaner alternative. The remaining training
    images keep their original order. Deterministic in ``seed``; the global RNG is not touched.
    """
    n = len(ds.train_y)
    if not 0 < int(n_val) < n:
        raise ConfigError(f"n_val={n_val} must be in [1, {n - 1}] for a training set of {n} images")
    gen = torch.Generator().manual_seed(_mix_seed(seed, 0x7A11D))
    perm = torch.randperm(n, generator=gen)
    val_idx = perm[: int(n_val)].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    meta = dict(ds.meta, val_indices=val_idx, val_seed=int(seed))
    return replace(
        ds,
        train_x=ds.train_x[keep],
        train_y=ds.train_y[keep],
        val_x=ds.train_x[val_idx],
        val_y=ds.train_y[val_idx],
        meta=meta,
    )


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (numpy's SeedSequence mixes them well)."""
    words = [int(p) % (2**64) for p in parts]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (as datasets store them) to float in [0, 1]; float input is returned as is."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def test_images_record(dataset: Any, indices: torch.Tensor, fingerprint: Optional[str] = None) -> dict[str, Any]:
    """Which test images an evaluation used: dataset, fingerprint, and the indices (``"all"`` for the whole split)."""
    n_total = len(dataset.test_y)
    whole = len(indices) == n_total and bool(torch.equal(indices, torch.arange(n_total)))
    return {"dataset": dataset.name, "fingerprint": fingerprint or dataset.fingerprint(), "split": "test",
            "n": int(len(indices)), "of": int(n_total), "selection": "all" if whole else "stratified(seed=0)",
            "indices": "all" if whole else [int(i) for i in indices]}

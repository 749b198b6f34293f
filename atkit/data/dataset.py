"""Datasets as uint8 tensors held in memory, and a device-side batch loader with augmentation.

Every dataset is decoded once into ``uint8`` NCHW tensors (CPU) with ``int64`` labels; models see
float images in [0, 1] (docs/methods.md, common protocol: no normalization outside the model). Training batches get
the §1 augmentation, random crop with zero padding (4 px) and horizontal flip p=0.5, computed on
whole batches on the target device by :class:`BatchLoader`, whose randomness depends only on
``(seed, epoch)`` so a resumed run sees exactly the batches of an uninterrupted one.

Names for :func:`load_dataset`: ``cifar10``, ``cifar100``, ``svhn`` (torchvision files),
``tiny-imagenet`` (the standard ``tiny-imagenet-200`` folder), ``folder`` (any ImageFolder-style
tree with ``train/`` and ``test/``, decoded once and cached on disk) and ``synthetic`` (built-in,
offline, with a designed accuracy-robustness trade-off; see :func:`make_synthetic`).

Order: folder-based splits (``folder``, ``tiny-imagenet``) are stored in one fixed shuffled order,
not ImageFolder's class order, so no slice of a split is a single class. Every evaluation or
analysis subset is still taken with :meth:`ImageDataset.eval_subset` (class-stratified, seeded, the
indices recorded), never as "the first n".
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tarfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from atkit.utils import (
    ConfigError,
    atomic_torch_save,
    atomic_write_text,
    check_choice,
    check_type,
    resolve_device,
    unknown_name_error,
)

__all__ = [
    "DATASETS",
    "Batch",
    "BatchLoader",
    "EpochPlan",
    "ImageDataset",
    "crop_flip",
    "default_data_root",
    "eval_loader",
    "load_dataset",
    "make_synthetic",
    "split_validation",
    "stratified_indices",
    "stratified_order",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
# Bump when the cache layout or the decoding changes, so old caches are not reused.
_CACHE_VERSION = 2  # 2: files stored in the fixed shuffled order of _storage_order
# Folder-based splits are stored in one fixed pseudo-random order (not the class-folder order), so
# that no slice of a split is one class. The same for every user and run: part of the data itself.
_STORAGE_ORDER_SEED = 0x0A7C1F


# ----------------------------------------------------------------------------------------------
# dataset container
# ----------------------------------------------------------------------------------------------


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


def _storage_order(files: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """``files``/``labels`` in the fixed shuffled storage order (see ``_STORAGE_ORDER_SEED``)."""
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(_STORAGE_ORDER_SEED)).tolist()
    return [files[i] for i in perm], [labels[i] for i in perm]


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


# ----------------------------------------------------------------------------------------------
# synthetic dataset
# ----------------------------------------------------------------------------------------------


def _palette(num_classes: int) -> torch.Tensor:
    """``num_classes`` well separated colours in [0, 1]³ whose brightest channel is 1.

    Greedy farthest-point (L2) selection on the grid points with max channel 1 of a regular grid
    with ``L`` levels per channel (the smallest ``L`` with enough points), starting at white
    (1, 1, 1); any two chosen colours are at least one grid step, ``1/(L-1)``, apart in L∞
    (0.5 for up to 19 classes).
    """
    levels = 2
    while levels**3 - (levels - 1) ** 3 < num_classes:
        levels += 1
    axis = torch.linspace(0.0, 1.0, levels)
    grid = torch.cartesian_prod(axis, axis, axis)
    cand = grid[grid.amax(dim=1) > 1 - 1e-6]
    chosen = [int(torch.argmin(((cand - 1.0) ** 2).sum(1)))]  # start at white
    dist = ((cand - cand[chosen[0]]) ** 2).sum(1)
    for _ in range(num_classes - 1):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        dist = torch.minimum(dist, ((cand - cand[nxt]) ** 2).sum(1))
    return cand[chosen]


# Zero-sum ("isoluminant") RGB directions with L∞ norm 1 for opponent-colour textures.
_OPPONENT = torch.tensor(
    [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [1.0, 0.0, -1.0], [-1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0]]
)


def _texture_tiles(num_classes: int, period: int, gen: torch.Generator, colour: str = "opponent") -> torch.Tensor:
    """One RGB tile ``(3, period, period)`` with entries in {-1, 0, 1} per class.

    ``colour="opponent"``: every pixel is one of the six zero-sum directions such as (1, -1, 0), so
    the texture has no luminance component; ``"rgb"``: every entry is ±1. Opponent colour keeps the
    texture apart from luminance edges, above all the zero-padding border of a random crop (a ~0.5
    step, ~20× the texture), which otherwise dominates the BatchNorm statistics of texture-sensitive
    channels and makes eval-mode accuracy erratic.
    High-pass: spatial frequencies below ``max(1, period/4)`` cycles per tile (at least the mean)
    are removed before quantising, so the texture has no smooth part that could overlap the robust
    feature. Mirror symmetry (``tile[..., j] == tile[..., period-1-j]``) makes a horizontally flipped
    image show the same tile (at another phase), so flip augmentation keeps the feature. Distinct:
    a candidate is redrawn while its squared distance to an earlier class's tile under some cyclic
    shift is below half a tile's energy, so no phase makes two classes look alike.
    """
    f = torch.fft.fftfreq(period) * period  # integer frequencies in cycles per tile
    low = (f.abs()[:, None].maximum(f.abs()[None, :])) < max(1, period // 4)
    dim = 3 * period * period
    energy = float(dim if colour == "rgb" else 2 * period * period)
    tiles: list[torch.Tensor] = []
    bank = torch.empty(num_classes * period * period, dim)  # every cyclic shift of every accepted tile
    filled = 0
    for _ in range(1000):
        spec = torch.fft.fft2(torch.randn(num_classes, 3, period, period, generator=gen))
        spec[..., low] = 0
        hp = torch.fft.ifft2(spec).real
        hp = hp + hp.flip(-1)
        if colour == "rgb":
            cands = torch.where(hp >= 0, 1.0, -1.0)
        else:  # nearest opponent direction at each pixel
            best = torch.einsum("ncij,kc->nkij", hp, _OPPONENT).argmax(1)  # (n, P, P)
            cands = _OPPONENT[best].permute(0, 3, 1, 2).contiguous()
        for cand in cands:
            # ‖a − b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩ with ‖a‖² = ‖b‖² = energy.
            if filled and float((2 * energy - 2 * (bank[:filled] @ cand.flatten())).min()) < energy / 2:
                continue
            tiles.append(cand)
            if len(tiles) == num_classes:
                return torch.stack(tiles)
            for dy in range(period):
                for dx in range(period):
                    bank[filled] = cand.roll((dy, dx), dims=(-2, -1)).flatten()
                    filled += 1
    raise ConfigError(
        f"could not draw {num_classes} distinct texture tiles of period {period} px; use a larger texture_period"
    )


_SYNTHETIC_CHUNK = 1024  # part of the generator's definition: changing it changes the images


def make_synthetic(
    n_train: int = 5000,
    n_test: int = 1000,
    num_classes: int = 10,
    seed: int = 0,
    image_size: int = 32,
    robust_amplitude: float = 0.4,
    robust_agreement: float = 0.75,
    robust_strength: tuple[float, float] | list[float] = (0.7, 1.0),
    texture_amplitude: float = 6 / 255,
    texture_period: int = 4,
    texture_colour: str = "opponent",
    noise_std: float = 0.0,
    background_level: float = 0.08,
    background_amplitude: float = 0.03,
) -> ImageDataset:
    """A built-in image dataset, deterministic in ``seed``, with an accuracy-robustness trade-off.

    Each image (RGB, ``image_size``², values in [0, 1] before uint8 rounding) is

        x = 0.5 + background + robust + texture + noise,   clipped to [0, 1]

    - ``background``: a smooth random colour field (4×4 uniform values in ±``background_amplitude``
      per channel, bilinearly upsampled).
    - ``robust`` (large amplitude, low frequency, only partly predictive): a Gaussian colour blob,
      ``robust_amplitude · s · exp(-‖p − c‖² / 2σ²) · u_k``, random centre ``c`` (±4 px around the
      middle at 32 px), random width σ ∈ [5, 8] px, strength s uniform in ``robust_strength``
      ([0.7, 1] by default; a range reaching 0 gives a spectrum of margins down to blobs an
      ε = 8/255 attack can flip, so robust training meets samples near its decision boundary), colour direction ``u_k``
      from a fixed palette of well separated RGB directions (L∞ distance ≥ 1 between classes, so
      with the defaults two classes' blobs differ by ≥ 0.14 ≈ 4.5·(8/255) in some channel at the
      centre). ``k`` is the true class with probability ``robust_agreement`` and a uniformly drawn
      *other* class otherwise, so a classifier that only uses this feature is right on about
      ``robust_agreement`` of the images (75% by default), and stays right under an ε = 8/255 attack.
    - ``texture`` (small amplitude, high frequency, fully predictive): a class-specific ±1 RGB tile
      (``texture_period`` px, mean removed, mirror-symmetric, distinct from every other class's tile
      under every shift), tiled over the image at a random phase and scaled by
      ``texture_amplitude`` (6/255 < ε = 8/255, so an L∞ attack can erase it). The random phase
      makes crop translations, and the mirror symmetry makes horizontal flips, produce images from
      the same distribution, so the §1 augmentation keeps the feature.
    - ``noise``: i.i.d. Gaussian, std ``noise_std`` (0 by default; uint8 rounding adds a little).

    Intended and measured behaviour (``small_cnn``, SGD momentum 0.9, wd 5e-4, batch 128, crop+flip,
    default dataset, CPU): standard training learns the texture: 10 epochs (lr 0.1, ×0.1 after
    epoch 7) give 99.8% clean and 1.6% PGD-20 (ε = 8/255, step 2/255) test accuracy; 10 epochs of
    one-cycle lr 0.05 give 100% / 0.0%. PGD-AT (PGD-10, ε = 8/255, 6 epochs) cannot use the texture,
    follows the blob colour (on every test image whose blob disagrees with its label it predicts
    the blob's class) and ends at 76.9% clean / 71.5% PGD-20: the accuracy-robustness trade-off of
    real data in minutes on a CPU. Standard training (5,000 images, 10 epochs, pang110 scaled) ends
    at 100% clean test accuracy for seeds 0, 1 and 2 with the trainer's default ``last_batch="auto"``;
    keeping the 8-image last batch instead threw the loss back to 2-5 at the start of epochs and
    ended seed 0 at 59%. While the learning rate is 0.1 the eval-mode accuracy can still dip for an
    epoch (seed 1: 33% at epoch 6), as BatchNorm running statistics lag the texture features.

    ``meta``: ``robust_label_train``/``robust_label_test`` (the class whose colour each blob shows),
    ``palette`` (per-class blob colour directions), ``texture_tiles``, ``params``. Class templates
    and samples all derive from ``seed``; train and test use separate random streams, so ``n_test``
    does not change the training images.
    """
    for nm, v in (("n_train", n_train), ("n_test", n_test)):
        if int(v) < 1:
            raise ConfigError(f"{nm}={v} must be >= 1")
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes={num_classes} must be >= 2")
    if int(image_size) < 8:
        raise ConfigError(f"image_size={image_size} must be >= 8")
    if not 0.0 <= robust_agreement <= 1.0:
        raise ConfigError(f"robust_agreement={robust_agreement} must be in [0, 1]")
    try:
        s_lo, s_hi = (float(v) for v in robust_strength)
    except (TypeError, ValueError):
        raise ConfigError(f"robust_strength={robust_strength!r} must be two numbers [min, max]") from None
    if not 0.0 <= s_lo <= s_hi:
        raise ConfigError(f"robust_strength={robust_strength!r} must satisfy 0 <= min <= max")
    if int(texture_period) < 2:
        raise ConfigError(f"texture_period={texture_period} must be >= 2")
    check_choice("texture_colour", texture_colour, ("opponent", "rgb"))
    num_classes, image_size, texture_period = int(num_classes), int(image_size), int(texture_period)

    tgen = torch.Generator().manual_seed(_mix_seed(seed, 0))
    palette = _palette(num_classes)[torch.randperm(num_classes, generator=tgen)]
    tiles = _texture_tiles(num_classes, texture_period, tgen, texture_colour)

    def split(n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Fixed-size chunks from one stream: bounded memory, and the first m images of a split do
        # not depend on n (n_train=1000 gives the first 1000 images of n_train=5000).
        # Every chunk is drawn whole and the last one cut, so a chunk's draws never depend on n.
        gen = torch.Generator().manual_seed(_mix_seed(seed, stream))
        parts = [chunk(_SYNTHETIC_CHUNK, gen) for _ in range(0, n, _SYNTHETIC_CHUNK)]
        return tuple(torch.cat(t)[:n] for t in zip(*parts))  # type: ignore[return-value]

    def chunk(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = image_size
        y = torch.randint(0, num_classes, (n,), generator=gen)
        # Robust feature's class: the true one, or (with prob. 1 - agreement) a different one.
        other = (y + torch.randint(1, num_classes, (n,), generator=gen)) % num_classes
        agree = torch.rand(n, generator=gen) < robust_agreement
        k = torch.where(agree, y, other)

        scale = s / 32.0
        centre = (s - 1) / 2 + (torch.rand(n, 2, generator=gen) * 2 - 1) * 4 * scale
        sigma = (5 + 3 * torch.rand(n, generator=gen)) * scale
        strength = s_lo + (s_hi - s_lo) * torch.rand(n, generator=gen)
        pos = torch.arange(s, dtype=torch.float32)
        dy2 = (pos[None, :] - centre[:, 0:1]) ** 2  # (n, s)
        dx2 = (pos[None, :] - centre[:, 1:2]) ** 2
        blob = torch.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma[:, None, None] ** 2))
        robust = (robust_amplitude * strength)[:, None, None, None] * blob[:, None] * palette[k][:, :, None, None]

        coarse = (torch.rand(n, 3, 4, 4, generator=gen) * 2 - 1) * background_amplitude
        background = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=True)

        phase = torch.randint(0, texture_period, (n, 2), generator=gen)
        rows = (pos.long()[None, :] + phase[:, 0:1]) % texture_period  # (n, s)
        cols = (pos.long()[None, :] + phase[:, 1:2]) % texture_period
        chan = torch.arange(3)
        texture = tiles[
            y[:, None, None, None], chan[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
        ]
        img = background_level + background + robust + texture_amplitude * texture
        if noise_std > 0:
            img += torch.randn(n, 3, s, s, generator=gen) * noise_std
        x = (img.clamp_(0, 1) * 255).round_().to(torch.uint8)
        return x, y.long(), k.long()

    train_x, train_y, train_k = split(int(n_train), 1)
    test_x, test_y, test_k = split(int(n_test), 2)
    params = dict(
        seed=int(seed), robust_amplitude=robust_amplitude, robust_agreement=robust_agreement,
        robust_strength=[s_lo, s_hi],
        texture_amplitude=texture_amplitude, texture_period=texture_period, texture_colour=texture_colour,
        noise_std=noise_std, background_level=background_level,
        background_amplitude=background_amplitude,
    )
    return ImageDataset(
        train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=num_classes, class_names=[f"class{c}" for c in range(num_classes)],
        name="synthetic",
        meta=dict(
            params=params, robust_label_train=train_k, robust_label_test=test_k,
            palette=palette, texture_tiles=tiles,
        ),
    )


# ----------------------------------------------------------------------------------------------
# image folders (ImageFolder layout, Tiny-ImageNet) with an on-disk cache of decoded tensors
# ----------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """``$ATKIT_DATA_DIR`` if set, else ``./data`` (git-ignored)."""
    return Path(os.environ.get("ATKIT_DATA_DIR", "data"))


def _decode_image(path: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image file to an ``(H, W, 3)`` uint8 array, resized (bilinear) to ``size`` = (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
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


def _load_folder(
    root: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    num_workers: int | None = None,
    test_split: str | None = None,
) -> ImageDataset:
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
            from torchvision.datasets.utils import download_and_extract_archive

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
        import torchvision.datasets as tvd

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


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------

DATASETS = ("cifar10", "cifar100", "svhn", "tiny-imagenet", "folder", "synthetic")
_ALIASES = {"tinyimagenet": "tiny-imagenet", "tiny-imagenet-200": "tiny-imagenet", "imagefolder": "folder"}
_SYNTHETIC_KW = {
    "n_train", "n_test", "num_classes", "seed", "image_size", "robust_amplitude", "robust_agreement", "robust_strength",
    "texture_amplitude", "texture_period", "texture_colour", "noise_std", "background_level",
    "background_amplitude",
}
_FOLDER_KW = {"image_size", "num_workers", "test_split"}
_TINY_KW = {"image_size", "num_workers"}


def _check_kwargs(name: str, kw: dict[str, Any], accepted: set[str]) -> None:
    bad = sorted(set(kw) - accepted)
    if bad:
        raise ConfigError(
            f"dataset {name!r} does not take option(s) {', '.join(map(repr, bad))}; "
            f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
        )


_DATASET_KW = {"synthetic": _SYNTHETIC_KW, "folder": _FOLDER_KW, "tiny-imagenet": _TINY_KW}


def available_memory_bytes() -> Optional[int]:
    """Memory the system can still give this process (``MemAvailable`` of ``/proc/meminfo``), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def synthetic_bytes(n_images: int, image_size: int) -> int:
    """Peak memory of :func:`make_synthetic` for ``n_images`` images of ``s``² pixels: the uint8 images (3·s² bytes
    each) and their two int64 labels, twice (the chunks and their concatenation); the float work of one chunk is
    bounded and left out."""
    return 2 * int(n_images) * (3 * int(image_size) ** 2 + 2 * 8)


def _check_synthetic_options(options: dict[str, Any]) -> None:
    """Integer options are integers, and the images fit in the memory available now."""
    for key in ("n_train", "n_test", "num_classes", "seed", "image_size", "texture_period"):
        if key in options:
            value = options[key]
            if isinstance(value, float) and value.is_integer():
                continue  # 1.0e4 from YAML is a count too
            check_type(f"data.{key}", value, int)
    n = int(options.get("n_train", 5000)) + int(options.get("n_test", 1000))
    size = int(options.get("image_size", 32))
    need, free = synthetic_bytes(n, size), available_memory_bytes()
    if free is not None and need > free:
        raise ConfigError(f"synthetic data of n_train + n_test = {n} images of {size}x{size} would need about "
                          f"{need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB of memory is available; lower n_train")


def check_dataset_options(name: str, options: dict[str, Any]) -> str:
    """Refuse an unknown dataset name or option (``root``, ``download`` and ``cache_dir`` are
    :func:`load_dataset`'s own) without loading anything; returns the canonical dataset name.
    Synthetic options are type-checked and their memory is estimated against what is available."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise unknown_name_error("dataset", name, DATASETS)
    _check_kwargs(key, {k: v for k, v in options.items() if k not in ("root", "download", "cache_dir")},
                  _DATASET_KW.get(key, set()))
    if key == "synthetic":
        _check_synthetic_options(options)
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
    decoded tensors (default ``<root>/.atkit_cache``). Extra options: ``synthetic`` takes the
    arguments of :func:`make_synthetic`; ``folder`` takes ``image_size``, ``num_workers``,
    ``test_split``; ``tiny-imagenet`` takes ``image_size``, ``num_workers``.
    """
    key = check_dataset_options(name, kw)
    if key == "synthetic":
        return make_synthetic(**kw)
    if key == "folder":
        return _load_folder(root, cache_dir=cache_dir, **kw)
    if key == "tiny-imagenet":
        return _load_tiny_imagenet(root, download=download, cache_dir=cache_dir, **kw)
    return _load_torchvision(key, root, download)


# ----------------------------------------------------------------------------------------------
# batches and augmentation
# ----------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """One batch: ``x`` float32 in [0, 1] on the loader's device, labels ``y``, a second independent
    augmentation ``x2`` (only with ``two_views=True``, else None) and the dataset ``index`` of each row."""

    x: torch.Tensor
    y: torch.Tensor
    x2: torch.Tensor | None
    index: torch.Tensor


class EpochPlan(NamedTuple):
    """What one rank sees in one epoch: dataset indices in order and per-row augmentation draws.

    ``offsets[i] = (dy, dx)`` in ``[0, 2·padding]`` is the crop corner in the padded image, ``flips[i]``
    whether row i is mirrored; ``offsets2``/``flips2`` are the second view's (two_views only)."""

    indices: torch.Tensor
    offsets: torch.Tensor | None
    flips: torch.Tensor | None
    offsets2: torch.Tensor | None
    flips2: torch.Tensor | None


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Random-crop-with-zero-padding and horizontal flip for a whole batch, without a Python loop.

    ``out[b, c, i, j] = pad(x)[b, c, dy_b + i, dx_b + j']`` with ``j' = W-1-j`` where ``flips[b]``
    (else ``j' = j``); ``pad`` adds ``padding`` zero pixels on each side (docs/methods.md, common protocol). Works on
    any dtype (uint8 before the float conversion is cheapest) and device.
    """
    b, c, h, w = x.shape
    dev = x.device
    offsets = offsets.to(dev)
    flips = flips.to(dev, torch.bool)
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, 0:1] + ar_h[None, :]  # (B, H)
    cols = offsets[:, 1:2] + torch.where(flips[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])  # (B, W)
    # Two gathers (rows, then columns) are cheaper than one 4-index advanced-indexing gather.
    x = torch.gather(x, 2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))
    return torch.gather(x, 3, cols[:, None, None, :].expand(b, c, h, w))


class BatchLoader:
    """Iterates ``(x, y)`` in batches on ``device`` with the §1 augmentation; exact under resume.

    The data are moved to ``device`` once (kept as uint8). Each epoch (``set_epoch(e)``) draws, from a
    private ``torch.Generator`` seeded by ``(seed, epoch)``, a permutation (if ``shuffle``) and for
    every position a crop offset and a flip bit (if ``augment``), so an epoch's batches are a pure
    function of ``(seed, epoch)`` — the global RNG is never used. With ``world_size > 1`` the epoch's
    permutation is padded by repeating its start to a multiple of ``world_size`` (as PyTorch's
    DistributedSampler does) and rank ``r`` takes positions ``r, r + world_size, ...``; the
    augmentation draws belong to positions, so the union over ranks is the single-process epoch.
    ``two_views`` adds ``x2``, an independent second augmentation of the same images
    (Consistency-AT, docs/methods.md, baselines). ``len(loader)`` is the number of batches per epoch.
    ``x`` may also be a float tensor in [0, 1] (used as is).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        augment: bool = True,
        seed: int = 0,
        two_views: bool = False,
        drop_last: bool = False,
        padding: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x.dim() != 4:
            raise ConfigError(f"x must be an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ConfigError(f"x must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
        if y.dim() != 1 or len(y) != len(x):
            raise ConfigError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
        if len(x) == 0:
            raise ConfigError("cannot iterate an empty dataset")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ConfigError(f"rank={rank} must be in [0, world_size={world_size})")
        if int(padding) < 0:
            raise ConfigError(f"padding={padding} must be >= 0")
        self.device = resolve_device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.two_views = bool(two_views)
        self.drop_last = bool(drop_last)
        self.padding = int(padding)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Rows this rank sees per epoch (before dropping a last partial batch)."""
        return math.ceil(len(self.y) / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_plan(self, epoch: int | None = None) -> EpochPlan:
        """The indices and augmentation draws this rank uses in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.y)
        gen = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, 0xBA7C4))
        perm = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:
            perm = perm.repeat(math.ceil(total / n))[:total]
        sl = slice(self.rank, total, self.world_size)
        offsets = flips = offsets2 = flips2 = None
        if self.augment:
            offsets = torch.randint(0, 2 * self.padding + 1, (total, 2), generator=gen)[sl]
            flips = (torch.rand(total, generator=gen) < 0.5)[sl]
            if self.two_views:
                offsets2 = torch.randint(0, 2 * self.padding + 1, (total, 2), generator=gen)[sl]
                flips2 = (torch.rand(total, generator=gen) < 0.5)[sl]
        return EpochPlan(perm[sl], offsets, flips, offsets2, flips2)

    def _view(self, xb: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None) -> torch.Tensor:
        if offsets is not None:
            xb = crop_flip(xb, offsets, flips, self.padding)
        if xb.dtype == torch.uint8:
            return xb.float().div_(255.0)
        return xb.float() if xb.dtype != torch.float32 else xb.clone()

    def iter_from(self, start_batch: int = 0) -> Iterator[Batch]:
        """Iterate the current epoch starting at batch ``start_batch`` (mid-epoch resume)."""
        plan = self.epoch_plan()
        to_dev = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        idx_all = plan.indices.to(self.device)
        off, fl, off2, fl2 = map(to_dev, (plan.offsets, plan.flips, plan.offsets2, plan.flips2))
        n = len(idx_all)
        for b in range(int(start_batch), len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            idx = idx_all[sl]
            xb = self.x[idx]
            x = self._view(xb, off[sl] if off is not None else None, fl[sl] if fl is not None else None)
            x2 = None
            if self.two_views:
                if off2 is not None:
                    x2 = self._view(xb, off2[sl], fl2[sl])
                else:
                    x2 = x.clone()
            yield Batch(x, self.y[idx], x2, idx)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)


def eval_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, *, device: str | torch.device = "cpu",
    rank: int = 0, world_size: int = 1,
) -> BatchLoader:
    """A :class:`BatchLoader` for evaluation: fixed order, no augmentation, keeps the last partial batch."""
    return BatchLoader(
        x, y, batch_size, device=device, shuffle=False, augment=False, rank=rank, world_size=world_size
    )

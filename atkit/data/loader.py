"""Device-side batches with the §1 augmentation: :class:`BatchLoader` (random crop with zero padding and horizontal
flip, computed on whole batches on the target device) whose randomness depends only on ``(seed, epoch)``, so a
resumed run sees exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F

from atkit.core.utils import ConfigError, resolve_device

from .dataset import _mix_seed

__all__ = ["Batch", "BatchLoader", "EpochPlan", "crop_flip", "eval_loader"]


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

"""Gradient accumulation: one optimiser step from ``k`` micro-batches (``RunConfig.accumulate_steps``; docs/methods.md,
training options), so that the batch-512-to-2048 recipes run where only a smaller batch fits in memory.

The trainer's batch of ``n`` images (per process under torchrun) is split into ``k`` consecutive micro-batches of
``n_j = n / k`` images (sizes differ by at most one when ``k`` does not divide ``n``). Each is passed to
``method.loss`` on its own and ``(n_j / n) * loss_j`` is back-propagated, so the accumulated gradient is

    sum_j (n_j / n) grad mean_{i in j} l_i = grad mean_{i in batch} l_i,

the gradient of the whole batch for every loss that is a mean of per-image terms (all of atkit's methods). The
optimiser steps once, and the learning-rate schedule, ``steps_per_epoch``, the EMA and the methods' ``after_step``
hooks all count optimiser steps, as without accumulation. ``k = 1`` is the plain step, bit for bit.

Exact for models without batch statistics. With BatchNorm each micro-batch is normalised with its own statistics
(and updates the running statistics once per micro-batch, ``k`` times per step), so the step is that of ``k``
smaller batches, not of one large one; the same holds for the BatchNorm passes of training attacks in ``train``
mode. Methods whose ``loss`` changes the weights (a weight perturbation) apply it per micro-batch.

Under torchrun the gradient all-reduce runs once per step: every micro-batch but the last runs inside DDP's
``no_sync`` (forward and backward), and the last one's backward reduces the accumulated gradients.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch.nn as nn

from ..core.utils import ConfigError


def micro_batches(batch: Any, steps: int) -> list[Any]:
    """``batch`` (a NamedTuple of tensors and ``None``) split row-wise into ``min(steps, n)`` consecutive parts."""
    n = batch.y.shape[0]
    parts = max(1, min(int(steps), n))
    if parts == 1:
        return [batch]
    sizes = [n // parts + (1 if j < n % parts else 0) for j in range(parts)]
    out, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        out.append(type(batch)(*(t[rows] if t is not None else None for t in batch)))
        start += size
    return out


def _no_sync(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """DDP's ``no_sync`` of the training model (:class:`atkit.core.fast.AutocastModel` keeps its DDP as ``_ddp``), else a
    no-op."""
    ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else getattr(model, "_ddp", None)
    return ddp.no_sync if ddp is not None else contextlib.nullcontext


def accumulate_gradients(method: Any, model: nn.Module, batch: Any, ctx: Any, steps: int,
                         zero_grad: Callable[[], None]) -> Iterator[tuple[Any, int]]:
    """Back-propagate ``method.loss`` over the micro-batches of ``batch``; yields ``(LossOutput, rows)`` of each.

    ``zero_grad`` is called once, after the first micro-batch's loss and before its backward (where the plain
    step calls it). The caller steps the optimiser after the last one.
    """
    parts = micro_batches(batch, steps)
    n = batch.y.shape[0]
    no_sync = _no_sync(model)
    for j, part in enumerate(parts):
        rows = part.y.shape[0]
        with (no_sync() if j < len(parts) - 1 else contextlib.nullcontext()):
            out = method.loss(model, part, ctx)
            if j == 0:
                zero_grad()
            (out.loss if len(parts) == 1 else out.loss * (rows / n)).backward()
        yield out, rows


def check_accumulation(local_batch_size: int, steps: int) -> None:
    """Refuse more micro-batches than the images each process gets per step."""
    if steps > local_batch_size:
        raise ConfigError(f"accumulate_steps={steps} exceeds the {local_batch_size} images per process and step "
                          "(batch_size over the processes): lower accumulate_steps or raise batch_size")


__all__ = ["accumulate_gradients", "check_accumulation", "micro_batches"]

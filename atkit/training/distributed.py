"""Multi-GPU training with ``torchrun`` and DistributedDataParallel (DDP), and its CPU test form (gloo).

Launch any training command under ``torchrun``; the trainer reads the environment ``torchrun`` sets::

    torchrun --standalone --nproc_per_node 8 -m atkit train parameters/paper/pgd_at_cifar10_resnet18.yaml

How a run is split (one process per GPU, ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from ``torchrun``):

* backend ``nccl`` on CUDA (process ``r`` uses ``cuda:LOCAL_RANK``), ``gloo`` on the CPU;
* ``batch_size`` in the config is the **total** batch: each process trains on ``batch_size // world_size``
  images per step (an error if it does not divide), so the optimisation is that of one process with the
  whole batch; the learning rate needs no change;
* the sampler is :class:`atkit.data.BatchLoader` with ``rank``/``world_size``: rank ``r`` takes positions
  ``r, r + W, ...`` of the epoch's permutation, whose augmentation draws belong to positions, so the union
  of the ranks' step-``t`` batches is exactly the one-process step-``t`` batch;
* the training forwards go through DDP (gradients all-reduced, averaged); attack passes call the plain
  module (:class:`atkit.core.fast.AutocastModel` routes them), so they never enter DDP's gradient reducer;
* BatchNorm: plain BN with per-process batch statistics during the epoch (no SyncBatchNorm; as with the
  per-GPU BN of data-parallel training in the released codes). At the end of every epoch the floating
  buffers (running mean and variance) of the model, its EMA and a method's weight average are averaged
  across ranks, so evaluation, checkpoints and resume all see one model. Parameters are identical across
  ranks by construction (DDP), so weight averages kept by methods (ReBAT, RPAT++) stay identical too;
* randomness: each rank seeds its global RNG from ``(seed, rank)`` after the model is built (attack random
  starts differ between ranks, as they do between images of one batch); checkpoints keep every rank's
  RNG state, so a resumed run continues exactly under the same number of processes;
* evaluation (per epoch and final) is sharded: rank ``r`` evaluates images ``r, r + W, ...`` and the
  per-image results are gathered, so every rank holds the same metrics;
* only rank 0 writes files (``config.yaml``, metrics, checkpoints, ``eval.json``); every rank reads the
  same run folder on resume, so the folder must be on a file system all processes see (one node, or a
  shared file system).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from ..core.utils import ConfigError, resolve_device

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) run; every method is a no-op for one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- batch and seeds -----------------------------------------------------------------------
    def local_batch_size(self, total: int) -> int:
        """The per-process batch: ``total // world_size``; the total must divide evenly."""
        if total % self.world_size:
            raise ConfigError(f"batch_size={total} is the total batch over {self.world_size} processes and must be "
                              f"divisible by it (e.g. {self.world_size * max(1, total // self.world_size)})")
        return total // self.world_size

    def rank_seed(self, seed: int) -> int:
        """A seed for this rank's global RNG: ``seed`` itself for one process, a mix of (seed, rank) else."""
        if not self.is_distributed:
            return int(seed)
        state = np.random.SeedSequence([int(seed) % (2**32), self.rank, 0xD15]).generate_state(1)
        return int(state[0])

    # -- collectives ---------------------------------------------------------------------------
    def barrier(self) -> None:
        if not self.is_distributed:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def sum(self, values: dict[str, Union[Tensor, float, int]]) -> dict[str, float]:
        """Sum each value over ranks (one collective for the whole dict, float64); returns Python floats."""
        keys = list(values)
        if not keys:
            return {}
        packed = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).detach().to("cpu").reshape(())
                              for k in keys])
        if self.is_distributed:
            packed = packed.to(self._comm_device())
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return dict(zip(keys, packed.cpu().tolist()))

    def max(self, value: Tensor) -> Tensor:
        """The elementwise maximum of ``value`` over ranks (``value`` itself for one process)."""
        if not self.is_distributed:
            return value
        out = value.detach().clone().to(self._comm_device())
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out.to(value.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    @torch.no_grad()
    def average_buffers(self, module: Optional[nn.Module]) -> None:
        """Average the floating buffers (BatchNorm running mean/var) of ``module`` over ranks, in place.

        Integer buffers (``num_batches_tracked``) are equal on every rank and left alone.
        """
        if not self.is_distributed or module is None:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in buffers]).to(self._comm_device())
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for b in buffers:
            n = b.numel()
            b.copy_(flat[offset:offset + n].view_as(b).to(b.device, b.dtype))
            offset += n

    # -- models and data -----------------------------------------------------------------------
    def wrap_ddp(self, module: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
        """``DistributedDataParallel(module)`` for this process (``broadcast_buffers=False``: BN buffers stay
        per process during the epoch and are averaged by :meth:`average_buffers` at its end)."""
        if not self.is_distributed:
            raise ConfigError("wrap_ddp needs a process group (run under torchrun with WORLD_SIZE > 1)")
        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        ddp_cls = nn.parallel.DistributedDataParallel
        # Newer releases rename broadcast_buffers to forward_sync_buffers (buffers still synced once at init,
        # which is what we want: every rank starts from rank 0's model).
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(ddp_cls.__init__).parameters
                          else {"broadcast_buffers": False})
        return ddp_cls(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters,
                       gradient_as_bucket_view=True, **no_buffer_sync)

    def shard(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """This rank's rows ``r, r + W, ...`` of each tensor (all of them for one process)."""
        if not self.is_distributed:
            return tensors
        return tuple(t[self.rank::self.world_size] for t in tensors)

    def merge_eval(self, local: Any, n_total: int) -> Any:
        """Gather the ranks' :class:`atkit.evaluation.EvalResult` on shards ``r::W`` into the result on all
        ``n_total`` images (per-sample flags interleaved back, accuracies, the worst case over the robust
        attacks, Mean and NRR recomputed; AutoAttack's warnings of every rank).

        ``details`` are rank 0's, with ``seconds`` the slowest rank's and ``shards`` the world size.
        """
        if not self.is_distributed:
            return local
        from ..evaluation import EvalResult  # why: evaluation pulls scipy; only a sharded evaluation needs it

        parts = self.all_gather_object(local.to_dict())
        first = EvalResult.from_dict(parts[0])
        shards = [EvalResult.from_dict(p) for p in parts]
        per_sample: dict[str, Tensor] = {}
        accuracy: dict[str, float] = {}
        for name in first.per_sample:
            full = torch.zeros(n_total, dtype=torch.bool)
            for r, shard in enumerate(shards):
                full[r::self.world_size] = shard.per_sample[name]
            per_sample[name] = full
            accuracy[name] = 100.0 * int(full.sum()) / n_total
        details = {k: dict(v) for k, v in first.details.items()}
        for name, info in details.items():
            secs = [s.details.get(name, {}).get("seconds") for s in shards]
            secs = [s for s in secs if s is not None]
            if secs:
                info["seconds"] = max(secs)
            info["shards"] = self.world_size
        warnings = list(dict.fromkeys(w for shard in shards for w in shard.attack_warnings))
        merged = EvalResult(accuracy=accuracy, per_sample=per_sample, n=n_total, threat=first.threat,
                            protocol=first.protocol, num_classes=first.num_classes, seed=first.seed, details=details,
                            attack_warnings=warnings, notes=first.notes, precision=first.precision,
                            provenance=None if first.provenance is None else {**first.provenance,
                                                                              "shards": self.world_size})
        merged.set_robust()  # the worst case over the robust attacks, per sample, on all images
        return merged


def init_from_env(device: Union[str, torch.device, None] = "auto") -> DistContext:
    """The :class:`DistContext` of this process, initialising the process group once under ``torchrun``.

    Without ``torchrun`` (``WORLD_SIZE`` unset or 1) this is one process on ``resolve_device(device)``.
    Under ``torchrun`` on CUDA the device is ``cuda:LOCAL_RANK`` (whatever index ``device`` names) and the
    backend ``nccl``; on the CPU the backend is ``gloo``. Calling it again returns the same context.
    """
    world = _env_int("WORLD_SIZE", 1)
    dev = resolve_device(device)
    if world <= 1 and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return DistContext(device=dev)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=_env_int("RANK", 0), world_size=world)
    backend = dist.get_backend()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev,
                       backend=str(backend))


def cleanup() -> None:
    """Destroy the process group if one was initialised (call once at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistContext", "ENV_VARS", "cleanup", "init_from_env"]

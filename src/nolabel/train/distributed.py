"""Data-parallel training with ``torchrun`` (DistributedDataParallel).

Launch any script that calls :func:`init_distributed` with
``torchrun --nproc_per_node G script.py ...``: the process group comes from the
``env://`` variables torchrun sets (``nccl`` on CUDA, ``gloo`` on CPU); without them
everything runs as one process (rank 0 of 1) and the helpers are no-ops.

Batches: :class:`ShardedBatches` draws ONE permutation per epoch from a generator
seeded by ``(seed, epoch)``, identical on every rank, cuts it into global batches of
``batch_size * world_size`` indices and gives rank r the r-th slice of each. The ranks
see disjoint shards, and G processes with per-rank batch B see, step by step, exactly
the samples one process with batch G * B would see.

Global batch statistics: SCAN's entropy term needs the mean prediction over the
whole (global) batch. :func:`global_mean` all-reduces the per-rank sums with the
autograd-aware ``torch.distributed.nn.functional.all_reduce`` (its backward sums the
incoming gradients over ranks), so ``pbar`` is the global-batch mean and, after DDP
averages parameter gradients over ranks, the gradient equals that of one process on
the concatenated batch. (Only the mean vector of K numbers travels, not the (B, K)
predictions.) BatchNorm statistics stay per rank unless ``sync_bn=True`` (CUDA only).
"""
from __future__ import annotations

import gc
import os
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..errors import NolabelError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_distributed(device: Optional[str | torch.device] = None, backend: Optional[str] = None) -> torch.device:
    """Join the torchrun process group (env://) when ``WORLD_SIZE`` > 1; returns this rank's device.

    ``device`` defaults to ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU;
    ``backend`` to ``nccl`` for CUDA and ``gloo`` for the CPU.
    """
    if device is None:
        device = f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if v not in os.environ]
        if missing:
            raise NolabelError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun")
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), init_method="env://")
    return device


def cleanup() -> None:
    """Leave the process group (when one was joined): first free what still holds it (a
    DistributedDataParallel wrapper left in a reference cycle, whose reducer would otherwise be
    torn down after the group and abort the process), then wait for every rank, then leave."""
    if is_distributed():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device, sync_bn: bool = False,
             find_unused_parameters: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when running distributed, else ``model`` itself."""
    if not is_distributed():
        return model
    if sync_bn:
        if device.type != "cuda":
            raise NolabelError("sync_bn needs CUDA devices; leave it off on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def global_mean(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean of ``x`` along ``dim`` over the samples of ALL ranks (differentiable; equal batch sizes assumed)."""
    local = x.sum(dim=dim)
    count = x.shape[dim]
    if not is_distributed() or world_size() == 1:
        return local / count
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(local, op=dist.ReduceOp.SUM) / (count * world_size())


def all_reduce_mean(value: float | torch.Tensor) -> float:
    """A scalar averaged over ranks (for logging; no gradient)."""
    if not is_distributed():
        return float(value)
    nccl = dist.get_backend() == "nccl"  # NCCL reduces only tensors on this rank's GPU
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world_size()


class ShardedBatches:
    """Per-epoch batches of indices for this rank (see the module doc); the last partial global batch is dropped.

    ``batch_size`` is per rank. Iterate ``batches(epoch)`` for ``(b,)`` index tensors.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_replicas: Optional[int] = None, rank_: Optional[int] = None):
        self.n = int(n)
        self.world = world_size() if num_replicas is None else int(num_replicas)
        self.rank = rank() if rank_ is None else int(rank_)
        if self.n < self.world:
            raise NolabelError(f"{self.n} samples cannot be shared by {self.world} processes")
        self.batch_size = max(1, min(int(batch_size), self.n // self.world))
        self.seed = int(seed)
        self.shuffle = shuffle

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def __len__(self) -> int:
        return self.n // self.global_batch

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of 0..n-1 (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + int(epoch))
        return torch.randperm(self.n, generator=g)

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        order = self.order(epoch)
        b, g = self.batch_size, self.global_batch
        for s in range(len(self)):
            yield order[s * g + self.rank * b: s * g + (self.rank + 1) * b]

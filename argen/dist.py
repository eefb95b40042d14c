"""Distributed data parallel under ``torchrun``, without module-level state.

``torchrun --nproc_per_node=N -m argen train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` reads them and
starts a process group (gloo on CPU, nccl on GPU). A plain ``argen ...`` run is world size 1 and never touches
``torch.distributed``. Everything a trainer needs is in the returned `DistributedContext`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as distributed


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process logs, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            distributed.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all processes (the value itself in a single process)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        distributed.all_reduce(value, op=distributed.ReduceOp.SUM)
        return value / self.world_size

    def close(self) -> None:
        if self.enabled and distributed.is_initialized():
            distributed.destroy_process_group()


def setup(device: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    ``device`` is "cpu", "cuda" or None (cuda when available).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not distributed.is_initialized():
        distributed.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)

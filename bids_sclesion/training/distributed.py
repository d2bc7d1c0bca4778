"""Where a process stands in a ``torchrun`` job, and the few collective operations training needs."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch


@dataclass
class DistributedContext:
    """Where this process stands in a ``torchrun`` job (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @classmethod
    def from_environment(cls, device: str) -> "DistributedContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        backend = "nccl" if device == "cuda" else "gloo"
        if not tdist.is_initialized():
            # Long timeout: the other processes wait while process 0 preprocesses the whole dataset.
            tdist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            torch.cuda.set_device(local_rank)
        return cls(tdist.get_rank(), tdist.get_world_size(), local_rank, backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        return torch.device("cuda", self.local_rank) if device == "cuda" and self.enabled else torch.device(device)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is true on any."""
        if not self.enabled:
            return flag
        import torch.distributed as tdist

        value = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def from_main(self, flag: bool, device: torch.device) -> bool:
        """Process 0's ``flag`` on every process."""
        if not self.enabled:
            return flag
        import torch.distributed as tdist

        value = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.broadcast(value, src=0)
        return bool(value.item() > 0)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()

"""The few collectives the probe needs, through ``deepspeed.comm`` (whatever backend DeepSpeed
opened: NCCL, gloo or oneCCL). Without an initialised backend (one process) they are trivial."""

from __future__ import annotations


class Collectives:
    def __init__(self) -> None:
        import deepspeed.comm as comm
        import torch
        from deepspeed.accelerator import get_accelerator

        self._torch = torch
        self._comm = comm
        self.active = bool(comm.is_initialized())
        self.rank = comm.get_rank() if self.active else 0
        self.world_size = comm.get_world_size() if self.active else 1
        self._device = get_accelerator().current_device_name()

    def _tensor(self, values: list[int]):
        return self._torch.tensor(values, dtype=self._torch.int64, device=self._device)

    def max_int(self, value: int) -> int:
        """The largest ``value`` over all ranks (every rank gets it)."""
        if not self.active:
            return value
        tensor = self._tensor([value])
        self._comm.all_reduce(tensor, op=self._comm.ReduceOp.MAX)
        return int(tensor.item())

    def gather_ints(self, values: list[int]) -> list[list[int]]:
        """Each rank's ``values`` (same length on every rank), in rank order, on every rank."""
        if not self.active:
            return [list(values)]
        mine = self._tensor(values)
        parts = [self._torch.empty_like(mine) for _ in range(self.world_size)]
        self._comm.all_gather(parts, mine)
        return [[int(v) for v in part.tolist()] for part in parts]

    def barrier(self) -> None:
        if self.active:
            self._comm.barrier()

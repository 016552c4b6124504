"""The rank variables torch.distributed reads, from the launcher that started the process.

DeepSpeed's own launcher sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for every rank. Its
other launchers start the ranks with ``srun`` or ``mpirun`` and leave that to the program
(DeepSpeed falls back to mpi4py, which a CPU cluster or a plain Slurm may not have); each of
those sets its own variables, read here. ``MASTER_ADDR`` and ``MASTER_PORT`` come from the
launch environment (simtune exports them through ``deepspeed_env``).
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping

LAUNCHER_RANK_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS"),
)
"""(rank, local rank, world size, ranks per node) as srun, Open MPI, MVAPICH and MPICH / Intel
MPI name them."""


def launcher_rank_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and ``LOCAL_SIZE`` when the launcher says it and
    it is unset) from the launcher's variables; empty when ``RANK`` is already set or no launcher
    variables are present. Slurm's are read only inside a job step (``SLURM_STEP_ID``), where
    srun started the process."""
    if "RANK" in environ:
        return {}
    for rank, local_rank, size, local_size in LAUNCHER_RANK_VARIABLES:
        if rank == "SLURM_PROCID" and "SLURM_STEP_ID" not in environ:
            continue
        if rank in environ and size in environ:
            found = {"RANK": environ[rank], "LOCAL_RANK": environ.get(local_rank, "0"), "WORLD_SIZE": environ[size]}
            per_node = environ.get(local_size, "").split("(")[0]  # Slurm may write "2(x3)"
            if per_node.isdigit() and "LOCAL_SIZE" not in environ:
                found["LOCAL_SIZE"] = per_node
            return found
    return {}


def adopt_launcher_ranks(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set :func:`launcher_rank_env`'s variables in ``environ``; returns them."""
    found = launcher_rank_env(environ)
    environ.update(found)
    return found

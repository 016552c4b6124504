"""Run every calibration microbenchmark on every rank and print one JSON line on rank 0.

Started on every rank, e.g. on two CPU processes of one node (``simtune.runner.local_ranks`` sets
the variables DeepSpeed's launcher would; on several nodes the ``deepspeed`` launcher runs it)::

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 \
        python -m simtune.runner.local_ranks --nproc 2 --master_port <free port> simtune.calib.run_all --out raw.json

Sections, in order: memory baseline (before anything is allocated), copy bandwidth, compute
(matmul and element-wise, forward and backward), optimizer step, collectives, and on CPU what a
throttled OpenMP pool adds to a parallel kernel (``simtune.calib.thread_pool``). All ranks run every
section at the same time, as in training, and rank 0 reports its own compute and optimizer
timings; a collective's time per repeat is that of the rank that entered it last. The output holds raw measurements
only (min/median/max per point); ``simtune.calibration`` fits them into a hardware profile.

Collectives are timed on the whole world and, when the ranks span several nodes (grouped by host
name, or by ``SIMTUNE_NODE_IDS``: see ``simtune.calib.topology``) with more than one rank each, again
within each node, every node on its own group at the same time (rank 0 keeps node 0's). Each
group's result carries its layout (nodes, ranks per node): a world spanning nodes gives the
inter-node figures, a node's group the intra-node ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time

from simtune.calib.timing import stats

SCHEMA = 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simtune.calib.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the JSON result to this file (rank 0)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--nvme-path", default=None, help="also time the storage under this folder (simtune.calib.nvme)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _combine_ranks(per_rank: list[dict], layout: dict) -> dict:
    """Merge every rank's collective samples: per repeat, the time of the rank that arrived last.

    After the barrier a rank that is scheduled late enters the collective late, and the others
    wait for it inside the call; the last rank to arrive waits for no one, so the smallest of
    the ranks' times is the collective's own cost. ``layout`` (nodes and ranks per node of the
    group) is kept with the result.
    """
    first = per_rank[0]
    ops = {}
    for op, points in first["ops"].items():
        merged = []
        for i, point in enumerate(points):
            columns = [r["ops"][op][i]["samples_s"] for r in per_rank]
            last_arrival = [min(values) for values in zip(*columns)]
            merged.append({"elements": point["elements"], "bytes": point["bytes"], **stats(last_arrival),
                           **({"tail": True} if point.get("tail") else {})})
        ops[op] = merged
    return {"ranks": first["ranks"], "dtype": first["dtype"], "layout": layout, "ops": ops}


def _versions(device, dist) -> dict:
    import deepspeed  # loaded by measure() already; imported there so that startup_s counts it
    import torch

    nccl = None
    if device.kind == "cuda":
        try:
            version = torch.cuda.nccl.version()
            nccl = ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)
        except Exception:  # noqa: BLE001 - a version string is informative only
            nccl = None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "deepspeed": deepspeed.__version__,
        "python": platform.python_version(),
        "backend": torch.distributed.get_backend(),
    }


def measure(quick: bool = False, local_rank: int | None = None, after_baseline=None,
            nvme_path: str | None = None) -> dict | None:
    """Every section on every rank (joining the process group when no one has); the raw result on
    rank 0, None on the others. The process group is left as it was found, so a program can run
    this first and go on with its own work (``simtune.calib.workload_rank`` does);
    ``after_baseline()``, when given, runs once the memory baseline is read, before any benchmark
    allocates; ``nvme_path``, when given, is where the storage ZeRO-Infinity would swap to is
    timed (:mod:`simtune.calib.nvme`)."""
    started = time.perf_counter()
    import torch  # imported here, not at the top: startup_s counts what a rank's start costs
    from deepspeed import comm as dist

    from simtune.calib import collectives, compute, memory, nvme, optimizer, thread_pool
    from simtune.calib.device import current_device, dtype_support
    from simtune.calib.topology import NODE_IDS_ENV, node_layout

    local_rank = int(os.environ.get("LOCAL_RANK", local_rank or 0))
    device = current_device(local_rank)
    dist.init_distributed(verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    hostnames: list = [None] * world
    dist.all_gather_object(hostnames, socket.gethostname())
    cross_size = os.environ.get("CROSS_SIZE")
    layout = node_layout(hostnames, os.environ.get(NODE_IDS_ENV), int(cross_size) if cross_size else None)
    ranks_per_node, nodes = layout.ranks_per_node, layout.nodes
    sections: dict[str, float] = {"startup_s": time.perf_counter() - started}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        sections[f"{name}_s"] = time.perf_counter() - t0
        return value

    dist.barrier()  # on NCCL the first collective creates the communicator: count its memory
    mem = memory.baseline(device)
    if after_baseline is not None:
        after_baseline()
    copy = timed("copy", lambda: memory.copy_bandwidth(device, quick, hostnames.count(hostnames[0])))
    dtypes = dtype_support(device)
    comp = timed("compute", lambda: compute.run(device, dtypes, quick))
    dist.barrier()
    opt = timed("optimizer", lambda: optimizer.run(device, quick))
    dist.barrier()

    coll_dtype = collectives.collective_dtype(device)
    samples: dict[str, dict] = {}
    if world > 1:
        samples["world"] = timed(
            "collectives", lambda: collectives.run_group(dist, device, None, world, coll_dtype, quick)
        )
        if nodes > 1 and ranks_per_node > 1:  # every node times its own group at once, as in training
            node_groups = [dist.new_group(list(layout.members(n))) for n in range(nodes)]
            my_group = node_groups[layout.node_of_rank[rank]]
            samples["intra_node"] = timed(
                "collectives_intra_node",
                lambda: collectives.run_group(dist, device, my_group, ranks_per_node, coll_dtype, quick),
            )

    pool = timed("thread_pool", lambda: thread_pool.wake_cost(dist, device, rank, quick))
    storage = timed("nvme", lambda: nvme.run(nvme_path, quick, rank, dist.barrier)) if nvme_path else None

    gathered: list = [None] * world
    dist.all_gather_object(gathered, {"memory": mem, "samples": samples, "nvme": storage})
    dist.barrier()

    if rank != 0:
        return None
    if world > 1:
        coll = {
            "applicable": True,
            "layout": layout.to_dict(),
            "world": _combine_ranks([g["samples"]["world"] for g in gathered],
                                    {"nodes": nodes, "ranks_per_node": ranks_per_node}),
        }
        if "intra_node" in samples:
            node0 = [gathered[r]["samples"]["intra_node"] for r in layout.members(0)]
            coll["intra_node"] = _combine_ranks(node0, {"nodes": 1, "ranks_per_node": ranks_per_node})
    else:
        coll = {"applicable": False, "reason": "one rank: there is nothing to communicate"}
    result = {
        "calib_schema": SCHEMA,
        "quick": quick,
        "environment": {
            "host": socket.gethostname(),
            "device_kind": device.kind,
            "device_name": device.name,
            "multiprocessors": (torch.cuda.get_device_properties(device.torch_device).multi_processor_count
                                if device.kind == "cuda" else None),
            "world_size": world,
            "ranks_per_node": ranks_per_node,
            "nodes": nodes,
            "ranks_per_host": hostnames.count(hostnames[0]),
            "node_grouping": layout.grouped_by,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "command": " ".join(sys.argv),
            **_versions(device, dist),
        },
        "memory": {
            "kind": device.kind,
            **mem,
            "rss_bytes_per_rank": [g["memory"]["rss_bytes"] for g in gathered],
        },
        "copy": copy,
        "compute": comp,
        "optimizer": opt,
        "collectives": coll,
        "thread_pool": pool,
        "sections_s": sections,
    }
    if storage is not None:
        result["nvme"] = {"path": nvme_path, **nvme.node_rates([gathered[r]["nvme"] for r in layout.members(0)])}
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    result = measure(args.quick, args.local_rank, nvme_path=args.nvme_path)
    import torch  # loaded by measure(), which imports it so that startup_s counts it
    from deepspeed import comm as dist

    rank = dist.get_rank()
    if rank == 0:
        line = json.dumps(result, separators=(",", ":"))
        if args.out:
            tmp = f"{args.out}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(line + "\n")
            os.replace(tmp, args.out)
    try:
        dist.barrier()
        torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001 - tearing down must not hide the result
        pass
    if rank == 0:
        sys.stderr.flush()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    # Leave without interpreter teardown: nothing may print after the JSON line.
    os._exit(0)


if __name__ == "__main__":
    main()

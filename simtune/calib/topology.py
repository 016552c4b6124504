"""Which ranks share a node: the groups calibration times collectives in.

Ranks are grouped by the host name each rank reports (``socket.gethostname()``, gathered from
every rank), not by the launcher's variables: DeepSpeed's launcher, ``mpirun`` and Slurm set
different ones (``LOCAL_SIZE``, ``OMPI_COMM_WORLD_LOCAL_SIZE``, ``SLURM_NTASKS_PER_NODE``), and
none of them says which global ranks sit together, whereas a host name does whatever started the
ranks. Nodes are numbered in the order of their lowest rank.

Where the launcher says how many nodes it used (DeepSpeed's sets ``CROSS_SIZE``; so does
``simtune.runner.local_ranks``, to 1), host names that name another number are refused before
anything is measured: containers that share a host name would otherwise mix the links in one group.

``SIMTUNE_NODE_IDS`` overrides the host names (and that check): one label per global rank, in rank
order, separated by commas (``"0,1"``: two ranks on two "nodes"; ``"a,a,b,b"``: two nodes of two).
It is a testing aid (several nodes simulated by processes of one machine) and a way out on
clusters whose host names do not tell the nodes apart. Every rank must see the same value; on
several nodes put it in ``~/.deepspeed_env``, since DeepSpeed's launcher passes on only the
variables listed there.

Pure: no torch, no process group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

NODE_IDS_ENV = "SIMTUNE_NODE_IDS"


class LayoutError(ValueError):
    """Ranks that cannot be grouped into nodes of the same size."""


@dataclass(frozen=True)
class NodeLayout:
    """Global ranks grouped into nodes."""

    node_of_rank: tuple[int, ...]
    """Node index of every global rank, nodes numbered in the order of their lowest rank."""
    grouped_by: str
    """"hostname" or the override variable's name."""

    @property
    def nodes(self) -> int:
        return max(self.node_of_rank) + 1

    @property
    def ranks_per_node(self) -> int:
        return len(self.node_of_rank) // self.nodes

    def members(self, node: int) -> tuple[int, ...]:
        """The global ranks of one node, in rank order."""
        return tuple(rank for rank, n in enumerate(self.node_of_rank) if n == node)

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "ranks_per_node": self.ranks_per_node,
                "node_of_rank": list(self.node_of_rank), "grouped_by": self.grouped_by}


def node_layout(hostnames: Sequence[str], override: Optional[str] = None,
                launcher_nodes: Optional[int] = None) -> NodeLayout:
    """Group ranks by their host names, or by ``override`` (the value of ``SIMTUNE_NODE_IDS``);
    ``launcher_nodes`` (``CROSS_SIZE``, where the launcher sets it) must match the host names."""
    labels: Sequence[str] = hostnames
    grouped_by = "hostname"
    if override is not None and override.strip():
        labels = [label.strip() for label in override.split(",")]
        grouped_by = NODE_IDS_ENV
        if len(labels) != len(hostnames) or not all(labels):
            raise LayoutError(f"{NODE_IDS_ENV}={override!r} must name the node of each of the {len(hostnames)} "
                              "ranks, separated by commas.")
    index: dict[str, int] = {}
    node_of_rank = tuple(index.setdefault(label, len(index)) for label in labels)
    sizes = [node_of_rank.count(node) for node in range(len(index))]
    if len(set(sizes)) > 1:
        raise LayoutError(f"The nodes hold different numbers of ranks ({', '.join(map(str, sizes))}, grouped by "
                          f"{grouped_by}); calibration needs the same number of ranks on every node.")
    if grouped_by == "hostname" and launcher_nodes is not None and launcher_nodes != len(index):
        raise LayoutError(f"The launcher started the ranks on {launcher_nodes} node(s), but their host names "
                          f"name {len(index)}; set {NODE_IDS_ENV} to the node of each rank.")
    return NodeLayout(node_of_rank, grouped_by)

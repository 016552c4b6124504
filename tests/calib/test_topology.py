"""Grouping ranks into nodes for the collectives' groups (simtune.calib.topology, no process group)."""

import pytest

from simtune.calib.topology import NODE_IDS_ENV, LayoutError, node_layout


def test_ranks_are_grouped_by_host_name_in_order_of_their_lowest_rank():
    layout = node_layout(["b-host", "a-host", "b-host", "a-host"])
    assert layout.node_of_rank == (0, 1, 0, 1)  # not contiguous: the host names decide, not the rank numbers
    assert (layout.nodes, layout.ranks_per_node) == (2, 2)
    assert layout.members(0) == (0, 2) and layout.members(1) == (1, 3)
    assert layout.grouped_by == "hostname"
    assert node_layout(["h", "h"]).to_dict() == {"nodes": 1, "ranks_per_node": 2, "node_of_rank": [0, 0],
                                                 "grouped_by": "hostname"}


def test_the_override_makes_ranks_of_one_machine_separate_nodes():
    layout = node_layout(["h", "h"], "0, 1")
    assert (layout.nodes, layout.ranks_per_node, layout.grouped_by) == (2, 1, NODE_IDS_ENV)
    assert node_layout(["h", "h", "h", "h"], "x,x,y,y").members(1) == (2, 3)
    assert node_layout(["h", "h"], "  ").grouped_by == "hostname"  # empty: not set


@pytest.mark.parametrize("override, match", [("0", "each of the 2 ranks"), ("0,,", "each of the 2 ranks"),
                                             ("0,0,1", "each of the 2 ranks")])
def test_an_override_that_does_not_name_every_rank_is_refused(override, match):
    with pytest.raises(LayoutError, match=match):
        node_layout(["h", "h"], override)


def test_nodes_of_different_sizes_are_refused():
    with pytest.raises(LayoutError, match=r"different numbers of ranks \(2, 1, grouped by hostname\)"):
        node_layout(["a", "a", "b"])


def test_host_names_must_name_as_many_nodes_as_the_launcher_used_unless_overridden():
    assert node_layout(["a", "b"], launcher_nodes=2).nodes == 2
    with pytest.raises(LayoutError, match=r"started the ranks on 2 node\(s\), but their host names name 1; "
                                          "set SIMTUNE_NODE_IDS"):
        node_layout(["same", "same"], launcher_nodes=2)  # containers that share a host name
    assert node_layout(["same", "same"], "0,1", launcher_nodes=1).nodes == 2  # the override is the user's word

"""The run's namespaces and links are gone after it, also when it fails, and a crashed run's
leftovers are removed by the next run."""

from __future__ import annotations

import pytest

from composition.chaos.netns import Topology, host_links, ip, namespaces, owned


def _leftovers(prefix: str) -> list[str]:
    return owned(namespaces(), prefix) + owned(host_links(), prefix)


def test_a_topology_is_removed_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError, match="check failed"):
        with Topology() as topo:
            topo.add("hub", 1)
            topo.add("d0", 10)
            assert sorted(owned(namespaces(), topo.prefix)) == sorted(
                [f"{topo.prefix}-net", f"{topo.prefix}-hub", f"{topo.prefix}-d0"]
            )
            raise RuntimeError("check failed")
    assert _leftovers(topo.prefix) == []
    assert not any(topo.prefix in line for line in ip("-o", "link", "show").stdout.splitlines())


def test_nodes_reach_the_hub_through_the_bridge() -> None:
    with Topology() as topo:
        topo.add("hub", 1)
        node = topo.add("d0", 10)
        out = ip("netns", "exec", node.ns, "ip", "route", "get", topo.nodes["hub"].addr)
        assert node.veth in out.stdout


def test_leftovers_of_a_crashed_run_are_removed_at_the_next_start() -> None:
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    dead = Topology(prefix=f"efc{pid_max + 1:x}")  # no process can have this id
    dead.__enter__()
    dead.add("hub", 1)
    try:
        assert owned(namespaces(), dead.prefix)
        with Topology() as topo:
            assert _leftovers(dead.prefix) == []
            assert owned(namespaces(), topo.prefix) == [f"{topo.prefix}-net"]
    finally:
        dead.close()

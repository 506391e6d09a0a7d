"""Network faults inside the run's namespaces: partitions (both directions by taking the bridge
port down, one direction with an nftables drop), random packet loss (nftables ``numgen``) and rate
limits (``tc`` tbf). Every rule lives in a namespace the run created; removing the fault (or the
namespace) removes the rule."""

from __future__ import annotations

import shutil
import subprocess

from composition.chaos.netns import Node, Topology, ip

TABLE = "efchaos"


def nft_available() -> bool:
    return shutil.which("nft") is not None


def _ns_run(ns: str, argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns}: {result.stderr.strip()}")


def loss_ruleset(percent: int) -> str:
    """An nftables table that drops ``percent`` % of packets in and out, chosen at random."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be 0..100")
    drop = f"numgen random mod 100 < {percent} drop;"
    return (
        f"table inet {TABLE} {{\n"
        f"  chain in {{ type filter hook input priority 0; {drop} }}\n"
        f"  chain out {{ type filter hook output priority 0; {drop} }}\n"
        "}\n"
    )


def one_way_ruleset(peer: str, direction: str) -> str:
    """Drop packets to (``out``) or from (``in``) ``peer``; the other direction still flows."""
    if direction == "out":
        rule = f"chain out {{ type filter hook output priority 0; ip daddr {peer} drop; }}"
    elif direction == "in":
        rule = f"chain in {{ type filter hook input priority 0; ip saddr {peer} drop; }}"
    else:
        raise ValueError("direction must be 'in' or 'out'")
    return f"table inet {TABLE} {{\n  {rule}\n}}\n"


def apply_nft(node: Node, ruleset: str) -> None:
    clear_nft(node)
    _ns_run(node.ns, ["nft", "-f", "-"], ruleset)


def clear_nft(node: Node) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.ns, "nft", "delete", "table", "inet", TABLE],
        capture_output=True,
        timeout=30,
    )


def partition(topo: Topology, node: Node) -> None:
    """Cut the node off the bridge (both directions)."""
    ip("-n", topo.switch, "link", "set", node.port, "down")


def heal(topo: Topology, node: Node) -> None:
    ip("-n", topo.switch, "link", "set", node.port, "up")
    clear_nft(node)


def rate_limit(node: Node, rate: str, burst: str = "32kbit", latency: str = "400ms") -> None:
    """Token bucket on the node's egress, e.g. ``rate="256kbit"``."""
    ip("-n", node.ns, "link", "show", node.veth)
    _ns_run(
        node.ns,
        ["tc", "qdisc", "replace", "dev", node.veth, "root", "tbf", "rate", rate, "burst", burst,
         "latency", latency],
    )  # fmt: skip


def clear_rate_limit(node: Node) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.ns, "tc", "qdisc", "del", "dev", node.veth, "root"],
        capture_output=True,
        timeout=30,
    )

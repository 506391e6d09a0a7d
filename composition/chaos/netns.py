"""Network namespaces and veth links of one chaos run, and their removal.

A run owns every name it creates: namespaces are ``<prefix>-<role>`` where the prefix is
``efc`` plus the run's process id in hex. The links live only inside those namespaces (both ends
of each veth pair are created directly there), so nothing is added to the host's own network and
deleting the namespaces deletes the links. ``remove_stale`` deletes the namespaces of earlier
runs whose process is gone (a crashed run), leaving a live run's alone.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from types import TracebackType

NAME_ROOT = "efc"
SUBNET = "10.213.0"
HUB_ADDR = f"{SUBNET}.1"
BRIDGE = "br0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` and return its result; a failure raises with ip's message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def run_prefix(pid: int | None = None) -> str:
    return f"{NAME_ROOT}{(pid or os.getpid()):x}"


def namespaces() -> list[str]:
    """Names of all network namespaces on the machine."""
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def host_links() -> list[str]:
    """Names of the links in the harness's own (host) namespace."""
    out = ip("-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def owned(names: list[str], prefix: str) -> list[str]:
    return [n for n in names if n.startswith(prefix + "-") or n == prefix]


def _pid_of(prefix: str) -> int | None:
    try:
        return int(prefix[len(NAME_ROOT) :], 16)
    except ValueError:
        return None


def stale_prefixes(names: list[str], alive: set[int] | None = None) -> set[str]:
    """Run prefixes among ``names`` whose run process no longer exists."""
    found: set[str] = set()
    for name in names:
        if not name.startswith(NAME_ROOT) or "-" not in name:
            continue
        prefix = name.split("-", 1)[0]
        pid = _pid_of(prefix)
        if pid is None:
            continue
        running = pid in alive if alive is not None else os.path.exists(f"/proc/{pid}")
        if not running:
            found.add(prefix)
    return found


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process still running inside one of the run's namespaces (the harness's
    children: hub, broker, devices, relays)."""
    out = ip("netns", "pids", ns, check=False).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), 9)
        except (OSError, ValueError):
            pass


def run_mounts(prefix: str, mounts_text: str) -> list[str]:
    """Mount points under the run's directory (``edgefleet-chaos-<prefix>-...``), e.g. the
    tmpfs data directories of its agents."""
    marker = f"/edgefleet-chaos-{prefix}-"
    return [line.split()[1] for line in mounts_text.splitlines() if marker in line]


def delete_prefix(prefix: str) -> None:
    for ns in owned(namespaces(), prefix):
        kill_namespace_processes(ns)
        ip("netns", "del", ns, check=False)
    for link in owned(host_links(), prefix):
        ip("link", "del", link, check=False)
    with open("/proc/mounts") as mounts:
        for point in run_mounts(prefix, mounts.read()):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def remove_stale() -> set[str]:
    """Delete what crashed earlier runs left behind; returns their prefixes."""
    stale = stale_prefixes(namespaces() + host_links())
    for prefix in stale:
        delete_prefix(prefix)
    return stale


@dataclass
class Node:
    """A namespace attached to the run's bridge: ``veth`` is its end, ``port`` the bridge's."""

    ns: str
    addr: str
    veth: str
    port: str


@dataclass
class Topology:
    """A star: a switch namespace with a bridge, one namespace per node, a veth pair each."""

    prefix: str = field(default_factory=run_prefix)
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-net"

    def __enter__(self) -> Topology:
        remove_stale()
        try:
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            ip("-n", self.switch, "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add(self, role: str, host_octet: int) -> Node:
        """A namespace ``<prefix>-<role>`` at ``10.213.0.<host_octet>`` on the bridge."""
        ns = f"{self.prefix}-{role}"
        node = Node(ns, f"{SUBNET}.{host_octet}", "eth0", f"p{host_octet}")
        ip("netns", "add", ns)
        self.nodes[role] = node
        ip("-n", ns, "link", "set", "lo", "up")
        ip(
            "link", "add", node.veth, "netns", ns, "type", "veth",
            "peer", "name", node.port, "netns", self.switch,
        )  # fmt: skip
        ip("-n", self.switch, "link", "set", node.port, "master", BRIDGE)
        ip("-n", self.switch, "link", "set", node.port, "up")
        ip("-n", ns, "addr", "add", f"{node.addr}/24", "dev", node.veth)
        ip("-n", ns, "link", "set", node.veth, "up")
        return node

    def exec_argv(self, role: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.nodes[role].ns, *argv]

    def close(self) -> None:
        delete_prefix(self.prefix)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Builds a running Agent from an AgentConfig: identity, runtimes, channel, edge hub."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent, ContainerGateway
from edge_agent.config import AgentConfig, ConfigError, parse_connection_string
from edge_agent.deployment_file import DeploymentStore
from edge_agent.reconciler import Policy, Reconciler
from edge_agent.restart_state import RestartStateStore
from edge_agent.runtime.base import Runtime
from edge_agent.runtime.container_network import gateway_for
from edge_agent.runtime.process import ProcessRuntime
from edge_agent.storage_monitor import StorageMonitor
from edge_agent.twin_channel import LocalChannel, TwinChannel
from edgefleet.files import atomic_write_text

log = logging.getLogger("edgefleet.agent")


def device_identity(cfg: AgentConfig) -> tuple[str, str]:
    """(device id, hub host name) from the provisioning section."""
    p = cfg.provisioning
    if p.source == "manual" and p.connection_string:
        parts = parse_connection_string(p.connection_string)
        return parts["DeviceId"], parts["HostName"]
    if p.source == "manual":
        return str(p.device_id), str(p.iothub_hostname)
    if p.source == "dps" and p.attestation is not None:
        return p.attestation.registration_id, ""
    return p.device_id or cfg.hostname or socket.gethostname(), ""


def build_runtimes(cfg: AgentConfig, device_id: str) -> dict[str, Runtime]:
    runtimes: dict[str, Runtime] = {}
    rc = cfg.runtime
    if rc.type in ("docker", "auto"):
        try:
            from edge_agent.runtime.docker import DockerRuntime

            d = rc.docker
            docker_rt = DockerRuntime(
                agent_id=device_id,
                data_dir=cfg.data_dir,
                name_prefix=d.name_prefix,
                log_max_size=d.log_max_size,
                log_max_file=d.log_max_file,
                image_gc_secs=d.image_gc_secs,
                stop_on_shutdown=d.stop_modules_on_exit,
                docker_url=d.url,
                stop_timeout=int(cfg.reconcile.stop_timeout_secs),
            )
            docker_rt.api.ping()
            runtimes["docker"] = docker_rt
        except Exception as exc:  # docker SDK missing or engine unreachable
            if rc.type == "docker":
                raise ConfigError(f"runtime docker: engine not reachable: {exc}") from None
            log.info("no docker engine (%s); process runtime only", exc)
    if rc.type in ("process", "auto"):
        runtimes["process"] = ProcessRuntime(
            cfg.data_dir, rc.process.log_max_bytes, rc.process.log_backups
        )
    return runtimes


def build_channel(cfg: AgentConfig, device_id: str) -> TwinChannel:
    p = cfg.provisioning
    if p.source == "local" and p.manifest is not None:
        return LocalChannel(device_id, p.manifest, cfg.data_dir)
    try:
        from edge_agent.hub_twin_channel import make_hub_channel
    except ImportError as exc:
        raise ConfigError(f"provisioning {p.source}: hub connection unavailable ({exc})") from None
    device_key = None
    if p.source == "dps" and p.attestation is not None and p.global_endpoint:
        from edge_agent.provisioning import Registration

        device_key = p.attestation.device_key()
        group = p.attestation.enrollment_group_id or p.attestation.registration_id
        Registration(
            cfg.data_dir, p.global_endpoint, group, p.attestation.registration_id, device_key
        ).ensure()
    return make_hub_channel(cfg, device_id, device_key)


def build_agent(cfg: AgentConfig, **overrides: Any) -> Agent:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    device_id, hub_host = device_identity(cfg)
    runtimes = build_runtimes(cfg, device_id)
    r = cfg.reconcile
    policy = Policy(
        interval=r.interval_secs,
        backoff_base=r.backoff_base_secs,
        backoff_max=r.backoff_max_secs,
        max_restarts=r.max_restarts,
        healthy_reset_secs=r.healthy_reset_secs,
        gc_interval=r.gc_interval_secs,
        stop_timeout=r.stop_timeout_secs,
    )
    channel = overrides.get("channel") or build_channel(cfg, device_id)
    runtime_type = "+".join(sorted(runtimes)) or "none"
    storage = StorageMonitor(cfg.data_dir)
    return Agent(
        device_id=device_id,
        channel=channel,
        reconciler=Reconciler(runtimes, policy, state=RestartStateStore(cfg.data_dir, storage)),
        store=DeploymentStore(cfg.data_dir),
        runtime_type=runtime_type,
        hostname=cfg.hostname,
        debounce=r.report_debounce_secs,
        edge_hub_factory=_edge_hub_factory(cfg) if cfg.edge_hub else None,
        hub_hostname=hub_host,
        storage=storage,
        create_options_policy=cfg.create_options_policy,
        container_gateway=_container_gateway(cfg, runtimes),
    )


def _container_gateway(
    cfg: AgentConfig, runtimes: Mapping[str, Runtime]
) -> ContainerGateway | None:
    """Where container modules reach the edge hub (``edge_hub_container_gateway_host``)."""
    lookup = getattr(runtimes.get("docker"), "network_gateway", None)
    if not cfg.edge_hub or lookup is None:
        return None
    return partial(gateway_for, setting=cfg.edge_hub_container_gateway_host, lookup=lookup)


def _edge_hub_factory(cfg: AgentConfig) -> Any:
    """The in-agent edge hub, on a port that stays the same across agent restarts:
    modules carry it in their env, and a changed env would recreate every module.

    The routes of the saved deployment are installed before the listener opens: modules that
    outlived an agent crash reconnect at once, and a message that arrived before the routes
    would be acknowledged and dropped as unrouted."""

    def factory(agent: Agent) -> Any:
        try:
            from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
        except ImportError:
            log.info("edge hub not available in this build; modules get identity env only")
            return None
        data_dir = cfg.data_dir / "edgehub"
        data_dir.mkdir(parents=True, exist_ok=True)
        port_file = data_dir / "port"
        port = cfg.edge_hub_port
        if not port:
            try:
                port = int(port_file.read_text())
            except (OSError, ValueError):
                port = 0
        upstream = getattr(agent.channel, "client", None)
        for candidate in dict.fromkeys([port, 0]):
            hub = EdgeHub(
                EdgeHubConfig(
                    device_id=agent.device_id,
                    data_dir=data_dir,
                    host=cfg.edge_hub_host,
                    port=candidate,
                    store_max_bytes=cfg.edge_hub_store_max_bytes,
                    forward_window=cfg.edge_hub_forward_window,
                    iothub_host=cfg.edge_hub_gateway_host,
                    iothub_port=cfg.edge_hub_gateway_port,
                    https_port=cfg.edge_hub_gateway_https_port,
                    gateway_hostname=cfg.edge_hub_gateway_hostname,
                    iothub_hostname=agent.hub_hostname or None,
                ),
                upstream,
                storage_events=agent.storage,
            )
            _configure(hub, agent.hub_desired)
            try:
                hub.start()
            except OSError as exc:  # the remembered port is taken: take a new one
                log.warning("edge hub port %s unavailable (%s)", candidate, exc)
                hub.stop()
                continue
            _remember_port(port_file, hub.port)
            return hub
        return None

    return factory


def _configure(hub: Any, desired: Any) -> None:
    """Install the saved deployment's routes (none saved: the first deployment brings them)."""
    if desired is None:
        return
    try:
        hub.apply(desired)
    except Exception:
        log.exception("persisted edge hub routes unusable")


def _remember_port(port_file: Path, port: int) -> None:
    """Keep the edge hub's port for the next start (unchanged: nothing written; a full disk:
    logged, written at a later start)."""
    try:
        if port_file.read_text() == str(port):
            return
    except OSError:
        pass
    try:
        atomic_write_text(port_file, str(port), mode=0o644)
    except OSError as exc:
        log.warning("edge hub port not saved (%s): modules may get a new port after a restart", exc)

"""MQTT test helpers: free ports, a mosquitto process with a given config, a recorder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class BrokerExited(RuntimeError):
    """The mosquitto process ended while it was starting."""


@dataclass
class Mosquitto:
    """A mosquitto process of our own (never the system service)."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:  # e.g. the port was taken meanwhile
                raise BrokerExited(f"mosquitto exited ({self.proc.returncode}): {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"mosquitto does not listen on {self.port}") from None
                time.sleep(0.05)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1000:]
        except OSError:
            return ""

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def mosquitto(tmp: Path, extra: str = "", port: int | None = None) -> Iterator[Mosquitto]:
    """An anonymous, plain-TCP mosquitto on a free port with ``extra`` config lines."""
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    user = "root" if os.geteuid() == 0 else ""
    # a port picked by binding 0 may be taken by someone else before mosquitto binds it:
    # then mosquitto exits and (unless the caller chose the port) another one is tried
    for attempt in range(5):
        chosen = port or free_port()
        conf.write_text(
            (f"user {user}\n" if user else "")
            + f"listener {chosen} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
            + extra
        )
        try:
            broker = Mosquitto(conf, chosen, tmp / "mosquitto.log").start()
            break
        except BrokerExited:
            if port is not None or attempt == 4:
                raise
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Recorder:
    """A plain paho client that records what it receives."""

    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)
    connect_rc: list[int] = field(default_factory=list)

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return True
            time.sleep(0.02)
        return False


def recorder(
    port: int,
    topics: list[str],
    *,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "",
    tls_ca: str | None = None,
    cert: tuple[str, str] | None = None,
    clean_session: bool = True,
) -> Recorder:
    """Connect, subscribe to ``topics`` and record every message (call ``.client.loop_stop()``)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )
    rec = Recorder(client)
    if username is not None:
        client.username_pw_set(username, password)
    if tls_ca is not None:
        client.tls_set(
            ca_certs=tls_ca, certfile=cert[0] if cert else None, keyfile=cert[1] if cert else None
        )

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, props: Any) -> None:
        rec.connect_rc.append(int(rc.value))
        if rc.is_failure:
            return
        c.subscribe([(t, 1) for t in topics])

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, props: Any) -> None:
        rec.subscribed.set()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with rec.lock:
            rec.messages.append((msg.topic, bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return rec


def stop_managed_mosquitto(data_dir: Path) -> None:
    """Kill the mosquitto a hub started under ``data_dir`` (a crashed hub leaves it running)."""
    pid_file = data_dir / "broker" / "mosquitto.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        if b"mosquitto" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def create_device(hub: Any, device_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a device through the hub's REST API; returns its JSON (with keys)."""
    with hub.client() as client:
        device: dict[str, Any] = client.create_device(device_id, body)
    return device


def credentials(hub: Any, device_id: str) -> dict[str, Any]:
    with hub.client() as client:
        creds: dict[str, Any] = client.request(
            "GET", f"/devices/{device_id}/mqttCredentials"
        ).json()
    return creds


def device_client(
    hub: Any, device_id: str, tmp: Path, *, key: str | None = None, **kwargs: Any
) -> Any:
    """A DeviceClient for a device of a running hub (primary key unless ``key`` is given)."""
    from edgefleet.sdk.device_client import DeviceClient

    creds = credentials(hub, device_id)
    if key is None:
        with hub.client() as client:
            key = client.get_device(device_id)["authentication"]["symmetricKey"]["primaryKey"]
    kwargs.setdefault("backoff_base", 0.1)
    kwargs.setdefault("backoff_max", 1.0)
    return DeviceClient(
        device_id,
        creds["host"],
        creds["port"],
        symmetric_key=key,
        ca_file=creds["ca_file"],
        outbox_path=tmp / f"outbox-{device_id}.db",
        **kwargs,
    )


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes.

    An exception from the predicate (a key not there yet, a half-written file, a server
    restarting) counts as "not yet"; only the final check after the deadline lets one out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return bool(predicate())


def stored_message_ids(hub: Any, device_id: str) -> list[str]:
    """The message ids of a device's stored telemetry, oldest first (every page)."""
    ids: list[str] = []
    since = "0"
    with hub.client() as api:
        while True:
            page = api.request(
                "GET", f"/devices/{device_id}/messages", params={"since": since, "limit": 10_000}
            ).json()
            if not page["messages"]:
                return ids
            ids += [m["messageId"] for m in page["messages"]]
            since = page["next"]

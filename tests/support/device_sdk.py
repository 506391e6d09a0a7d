"""Running Microsoft's device SDK (azure-iot-device) from its own virtualenv against a hub, and
raw IoT Hub-dialect MQTT clients for what the SDK never does (hostile subscriptions)."""

from __future__ import annotations

import json
import os
import queue
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import sas

VENV = Path(os.environ.get("EDGEFLEET_DEVICE_SDK_VENV", "/var/cache/edgefleet/venv-iot-device"))
DRIVER = Path(__file__).parents[1] / "iothub_sdk" / "device_sdk_driver.py"
IOTHUB_PORT = 8883


def sdk_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".edgefleet-ready").exists() or not python.exists():
        pytest.fail(
            f"the device SDK virtualenv is missing at {VENV}: run .ci/install "
            "(or scripts/device-sdk-venv) once; it installs azure-iot-device there",
            pytrace=False,
        )
    return python


class SdkProcess:
    """The driver script in the SDK's virtualenv; its JSON event lines, read in a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(sdk_python()), str(DRIVER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue
        self.events.put({"event": "exited"})

    def next(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next event line, which must be ``event``."""
        try:
            got = self.events.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"no {event!r} from the SDK; stderr:\n{self.stderr()}") from None
        if got["event"] != event:
            self.stop()
            raise AssertionError(f"expected {event!r}, got {got}; stderr:\n{self.stderr()}")
        return got

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


def device_connection_string(host: str, device_id: str, key: str, module_id: str = "") -> str:
    module = f";ModuleId={module_id}" if module_id else ""
    return f"HostName={host};DeviceId={device_id}{module};SharedAccessKey={key}"


def device_token(host: str, device_id: str, key: str, expiry: int) -> str:
    """A device SAS token as the SDK makes it (``sr`` = host/devices/{id}, no ``skn``)."""
    resource = quote(f"{host}/devices/{device_id}", safe="")
    sig = quote(sas.signature(resource, str(expiry), key), safe="")
    return f"SharedAccessSignature sr={resource}&sig={sig}&se={expiry}"


class RawIotHubClient:
    """A paho client speaking IoT Hub's dialect by hand, recording what reaches it."""

    def __init__(
        self, host: str, ca_file: Path, device_id: str, password: str, port: int = IOTHUB_PORT
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(f"{host}/{device_id}/?api-version=2021-04-12", password)
        ctx = ssl.create_default_context(cafile=str(ca_file))
        self.client.tls_set_context(ctx)
        self.client.reconnect_delay_set(30, 60)  # one connection per test; no reconnects
        self.host, self.port = host, port
        self.connack: list[int] = []
        self.disconnected = threading.Event()
        self.subacks: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda c, u, f, rc, pr: self.connack.append(int(rc.value))
        self.client.on_disconnect = lambda c, u, f, rc, pr: self.disconnected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))

    def _on_subscribe(self, c: Any, u: Any, mid: int, codes: Any, props: Any) -> None:
        self.subacks[mid] = [int(code.value) for code in codes]

    def connect(self, timeout: float = 15.0) -> int:
        """The CONNACK code (0 accepted, 135 not authorised), -1 when the socket failed."""
        try:
            self.client.connect(self.host, self.port)
        except OSError:
            return -1
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self.connack and time.monotonic() < deadline:
            if self.disconnected.is_set():
                break
            time.sleep(0.02)
        return self.connack[0] if self.connack else -1

    def subscribe(self, topic: str, timeout: float = 10.0) -> list[int]:
        _rc, sent = self.client.subscribe(topic, qos=1)
        mid = int(sent or 0)
        deadline = time.monotonic() + timeout
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.subacks.get(mid, [])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

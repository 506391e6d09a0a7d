"""``--broker mosquitto``: the hub runs Debian's mosquitto with a generated configuration.

Files under ``<data_dir>/broker/``: ``mosquitto.conf``, ``passwd``, ``acl``, ``ports.json``,
``mosquitto.pid``, ``mosquitto.log`` and the persistence database in ``data/``.

- ``port`` (8883) is the hub's MQTT front end (``cloud_hub.frontend``), not mosquitto: mosquitto's
  user name/password listener is an internal plain one on ``127.0.0.1:internal_port``, where the
  front end relays device connections and the hub's service client connects. A TLS listener
  (``cert_port``) requires a client certificate signed by the hub CA (CN = device id becomes the
  user name, ``crlfile`` revokes). Server certificate and CA come from
  :class:`edgefleet.ca.HubCA`.
- ``passwd``: one user per key slot: ``{id}`` for the primary key and ``{id}/secondary`` for the
  secondary key (mosquitto holds one password per user), password =
  :func:`edgefleet.protocol.mqtt_password`; hashed here in mosquitto's PBKDF2-SHA512 ``$7$``
  format. Disabled devices have no users, and their certificates are on hold in the CRL. Each
  enabled device and module also has a front-end user (:func:`frontend_user`), whose password
  only the hub knows, for the IoT Hub-dialect connections the front end makes on its behalf.
- ``acl``: ``pattern readwrite devices/%u/#`` plus explicit lines for the secondary aliases, the
  front-end users (each confined to its identity's subtree) and the hub's service users.
  ``use_username_as_clientid`` stops a device from taking over another device's session with a
  spoofed client id.
- Regenerated and reloaded (SIGHUP; mosquitto then drops clients whose user vanished) on every
  registry change. A live certificate connection of a disabled or revoked device is closed by a
  session takeover with the hub's own certificate.
- The broker outlives a crashed hub (it keeps the un-acknowledged messages); a restarted hub adopts
  it through the pid file. A clean hub shutdown stops it.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from cloud_hub.broker.base import Endpoint, own_broker_endpoint, persisted_ports
from edgefleet import protocol as p
from edgefleet.ca import HubCA
from edgefleet.files import atomic_write_text
from edgefleet.iothub_dialect import IotHubIdentity

log = logging.getLogger(__name__)

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
SERVICE_USERS = (p.HUB_USERNAME, p.HUB_USERNAME + "/aux")
"""Privileged users: the hub's service client and an auxiliary one (benchmarks, tools)."""


def hash_password(password: str) -> str:
    """mosquitto 2.0's ``$7$`` password hash (PBKDF2-SHA512, 101 iterations, 12-byte salt)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"mosquitto" in cmdline


FRONTEND_USER_PREFIX = "$edgefleet-fe/"
INTERNAL_HOST = "127.0.0.1"


def frontend_user(ident: IotHubIdentity) -> str:
    """The mosquitto user the front end connects as for an IoT Hub-dialect identity (also its
    client id: the listener uses user names as client ids)."""
    return FRONTEND_USER_PREFIX + ident.client_id


def frontend_password(secret: str, user: str) -> str:
    """A front-end user's password: derived from the hub's service secret, never stored."""
    digest = hmac.new(secret.encode(), b"edgefleet-frontend\n" + user.encode(), "sha256")
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def _usable_id(device_id: str) -> bool:
    return (
        ":" not in device_id
        and not device_id.startswith(p.HUB_USERNAME)
        and all(ch not in device_id for ch in "/+#\n\r\x00 ")
    )


class MosquittoBroker:
    def __init__(self, data_dir: Path, host: str, options: dict[str, Any]) -> None:
        self.dir = (data_dir / "broker").resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registry = options["registry"]
        self.ca: HubCA = options["ca"]
        self.host = options.get("mqtt_host") or host
        self.endpoint = own_broker_endpoint("mosquitto", data_dir, self.host, options)
        internal = persisted_ports(self.dir, INTERNAL_HOST, {"internal_port": 0})
        self.upstream = Endpoint(
            kind="mosquitto",
            host=INTERNAL_HOST,
            port=internal["internal_port"],
            tls=False,
            ca_file=None,
            service_username=self.endpoint.service_username,
            service_password=self.endpoint.service_password,
        )
        self.conf_file = self.dir / "mosquitto.conf"
        self.pid_file = self.dir / "mosquitto.pid"
        self.log_file = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._sync_lock = threading.Lock()
        self._held: set[str] = set()
        self._newly_held: set[str] = set()
        self._hashes: dict[str, tuple[str, str]] = {}  # user -> (password, its hash)
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- configuration --------------------------------------------------------------------------

    def write_config(self) -> None:
        self.ca.ensure([self.host, "localhost", "127.0.0.1"])
        run_as = getpass.getuser()
        tls = (
            f"cafile {self.ca.ca_file}\ncertfile {self.ca.server_cert_file}\n"
            f"keyfile {self.ca.server_key_file}\n"
        )
        (self.dir / "data").mkdir(exist_ok=True)
        conf = f"""# generated by the edgefleet hub; rewritten on every start
user {run_as}
pid_file {self.pid_file}
per_listener_settings false
allow_anonymous false
password_file {self.dir / "passwd"}
acl_file {self.dir / "acl"}
persistence true
persistence_location {self.dir / "data"}/
autosave_interval 1
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 1000
max_packet_size 1048576
log_dest file {self.log_file}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true

listener {self.upstream.port} {self.upstream.host}
use_username_as_clientid true

listener {self.endpoint.cert_port} {self.host}
{tls}require_certificate true
use_identity_as_username true
use_username_as_clientid true
crlfile {self.ca.crl_file}
"""
        self.conf_file.write_text(conf)
        self.sync_files()

    def sync_files(self) -> bool:
        """Rewrite passwd/acl/CRL from the registry; True when anything changed."""
        service_pw = self.endpoint.service_password or ""
        users: list[tuple[str, str]] = [(u, service_pw) for u in SERVICE_USERS]
        acl = ["# generated by the edgefleet hub", ""]
        for user in SERVICE_USERS:
            acl += [f"user {user}", "topic readwrite devices/#", ""]
        disabled: set[str] = set()
        known: set[str] = set()
        for ident in self.registry.identities(modules=False):
            known.add(ident.device_id)
            if not ident.enabled or not _usable_id(ident.device_id):
                disabled.add(ident.device_id)
                continue
            users.append(self._frontend_login(IotHubIdentity(ident.device_id), service_pw))
            acl += [f"user {users[-1][0]}", f"topic readwrite devices/{ident.device_id}/#", ""]
            if ident.primary_key:
                users.append((ident.device_id, p.mqtt_password(ident.device_id, ident.primary_key)))
            if ident.secondary_key:
                alias = p.mqtt_username(ident.device_id, "secondary")
                users.append((alias, p.mqtt_password(ident.device_id, ident.secondary_key)))
                acl += [f"user {alias}", f"topic readwrite devices/{ident.device_id}/#", ""]
        for ident in self.registry.identities():
            if ident.module_id is None or ident.device_id in disabled or not ident.enabled:
                continue
            if not _usable_id(ident.module_id):
                continue
            module = IotHubIdentity(ident.device_id, ident.module_id)
            users.append(self._frontend_login(module, service_pw))
            acl += [f"user {users[-1][0]}", f"topic readwrite {module.prefix}#", ""]
        acl += [f"pattern readwrite {p.ACL_PATTERN}", ""]
        # Deleted devices' certificates stay on hold too.
        issued = set(self.ca.issued().values())
        held = disabled | (issued - known)
        fingerprint = hashlib.sha256(
            json.dumps([sorted(users), acl, sorted(held), sorted(self.ca.revoked())]).encode()
        ).hexdigest()
        stamp = self.dir / "state.sha256"
        if stamp.exists() and stamp.read_text() == fingerprint and (self.dir / "passwd").exists():
            changed_crl = self.ca.hold_devices(held)
            return changed_crl
        lines = [f"{user}:{self._hash(user, pw)}" for user, pw in users]
        self._hashes = {user: self._hashes[user] for user, _pw in users}
        atomic_write_text(self.dir / "passwd", "\n".join(lines) + "\n")
        atomic_write_text(self.dir / "acl", "\n".join(acl))
        self.ca.hold_devices(held)
        stamp.write_text(fingerprint)
        self._newly_held |= held - self._held
        self._held = held
        return True

    @staticmethod
    def _frontend_login(ident: IotHubIdentity, secret: str) -> tuple[str, str]:
        user = frontend_user(ident)
        return user, frontend_password(secret, user)

    def frontend_login(self, ident: IotHubIdentity) -> tuple[str, str, str] | None:
        """(client id, user name, password) the front end connects with for an IoT Hub-dialect
        identity (see :func:`frontend_user`)."""
        if not _usable_id(ident.device_id) or not _usable_id(ident.module_id or "x"):
            return None
        user, password = self._frontend_login(ident, self.endpoint.service_password or "")
        return user, user, password

    def _hash(self, user: str, password: str) -> str:
        """The user's password hash: the one written before while the password is the same
        (hashing every user of a big fleet on each registry change costs seconds)."""
        known = self._hashes.get(user)
        if known is None or known[0] != password:
            known = self._hashes[user] = (password, hash_password(password))
        return known[1]

    # -- process --------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self.write_config()
        self._launch()
        self._watchdog = threading.Thread(target=self._watch, name="mosquitto-watch", daemon=True)
        self._watchdog.start()

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def _watch(self) -> None:
        """Restart mosquitto when it exits while the hub runs (its sessions come from disk)."""
        while not self._stopping.wait(0.2):
            if not self._alive():
                log.warning("mosquitto exited; restarting it")
                try:
                    self.pid_file.unlink(missing_ok=True)
                    self._launch()
                except Exception:  # noqa: BLE001 - retried on the next tick
                    log.exception("restarting mosquitto failed")

    def _launch(self) -> None:
        self.proc = None
        if self.pid_file.exists():
            try:
                pid = int(self.pid_file.read_text().strip())
            except ValueError:
                pid = 0
            if pid and _pid_alive(pid):
                log.info("adopting the running mosquitto (pid %d)", pid)
                self.pid = pid
                os.kill(pid, signal.SIGHUP)
                try:
                    self._wait_listening(5)
                    return
                except RuntimeError:
                    # SIGHUP does not move listeners: one started with other ports (e.g. by a
                    # hub without the front end) is restarted; its sessions come from disk
                    log.warning("restarting mosquitto (pid %d): its listeners changed", pid)
                    self._stop_pid(pid)
        self.proc = subprocess.Popen(
            [MOSQUITTO_BIN, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file.open("ab"),
            start_new_session=True,  # survives a crash of the hub, which adopts it on restart
        )
        self.pid = self.proc.pid
        self._wait_listening()
        log.info("mosquitto (pid %d) listens on %s", self.pid, self.upstream.port)

    def _wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited; see {self.log_file}")
            try:
                with socket.create_connection(
                    (self.upstream.host, self.upstream.port), timeout=0.5
                ):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.upstream.port}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
        if self.pid is not None:
            self._stop_pid(self.pid)

    def _stop_pid(self, pid: int) -> None:
        """SIGTERM (mosquitto saves its sessions), SIGKILL after 10 s."""
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return
            elif not _pid_alive(pid):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def reload(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGHUP)
            except OSError:
                log.warning("mosquitto (pid %s) is gone", self.pid)

    def sync(self) -> None:
        with self._sync_lock:
            if self.sync_files():
                self.reload()
            kick, self._newly_held = self._newly_held, set()
        for device_id in kick:
            self.kick(device_id, None)

    def kick(self, device_id: str, client_id: str | None) -> None:
        """Close a live certificate connection of a device: both listeners replace the client id
        by the user name, so a connection with a hub-made certificate for the same CN takes the
        session over (clean), then leaves. Password users are dropped by the reload itself."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if self.pid is None or self.endpoint.cert_port is None:
            return
        cert_file, key_file = self.ca.issue_untracked(device_id, self.dir / "kick")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True)
        client.tls_set(
            ca_certs=str(self.ca.ca_file), certfile=str(cert_file), keyfile=str(key_file)
        )
        try:
            client.connect(self.host, self.endpoint.cert_port, keepalive=10)
            client.loop_start()
            time.sleep(0.3)
            client.disconnect()
            client.loop_stop()
        except (OSError, ValueError) as exc:
            log.info("kick of %s failed: %s", device_id, exc)
        finally:
            cert_file.unlink(missing_ok=True)
            key_file.unlink(missing_ok=True)

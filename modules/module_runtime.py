"""What every shipped module shares: logging, the edge hub connection, twin settings, SIGTERM.

    with ModuleRuntime("camera") as rt:          # connects with create_from_environment()
        rt.on_settings(apply)                    # full desired properties now, patches later
        while not rt.stopping.wait(interval): ...

SIGTERM and SIGINT set ``stopping``; leaving the block shuts the client down, so a module exits
within one loop iteration of the signal with status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from edgefleet.sdk.module_client import ClientError, Message, MessageRefusedError, ModuleClient

JsonDict = dict[str, Any]
SettingsCallback = Callable[[JsonDict], None]


def env_float(name: str, default: float) -> float:
    """A float from the environment; an unparsable value falls back to ``default``."""
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


class ModuleRuntime:
    def __init__(self, name: str, client: ModuleClient | None = None) -> None:
        logging.basicConfig(
            level=os.environ.get("LOG_LEVEL", "INFO").upper(),
            format=f"%(asctime)s %(levelname)s {name}: %(message)s",
            stream=sys.stderr,
        )
        self.log = logging.getLogger(f"edgefleet.modules.{name}")
        self.stopping = threading.Event()
        self._client = client
        self._callbacks: list[SettingsCallback] = []
        self._effective: list[Callable[[], JsonDict]] = []

    @property
    def client(self) -> ModuleClient:
        assert self._client is not None, "use ModuleRuntime as a context manager"
        return self._client

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        self.log.info("signal %d: stopping", signum)
        self.stopping.set()

    def __enter__(self) -> ModuleRuntime:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._signal)
            signal.signal(signal.SIGINT, self._signal)
        if self._client is None:
            self._client = ModuleClient.create_from_environment()
        self._client.on_twin_desired_properties_patch_received = self._patch
        self._client.connect(timeout=env_float("EDGEHUB_CONNECT_TIMEOUT", 60.0))
        self.log.info("connected to the edge hub as %s", self._client.module_id)
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        if self._client is not None:
            self._client.shutdown()
        self.log.info("stopped")

    def on_settings(
        self, callback: SettingsCallback, effective: Callable[[], JsonDict] | None = None
    ) -> None:
        """Call ``callback`` with the twin's desired properties now, then with every patch.

        With ``effective``, its result is sent as reported properties after each change.
        """
        self._callbacks.append(callback)
        if effective is not None:
            self._effective.append(effective)
        try:
            desired = self.client.get_twin(timeout=10).get("desired") or {}
        except ClientError as exc:
            self.log.warning("module twin not read (%s); using environment defaults", exc)
            desired = {}
        self._apply(callback, desired)

    def send(self, message: Message, output: str, attempt_secs: float = 1.0) -> bool:
        """Send until the edge hub acknowledges or the module is stopping (then False).

        Retries reuse the message id, so the receiver drops duplicates. A message the edge hub
        refused (its disk is full) is tried again every ``attempt_secs``.
        """
        while not self.stopping.is_set():
            try:
                self.client.send_message_to_output(message, output, timeout=attempt_secs)
                return True
            except MessageRefusedError as exc:
                self.log.warning("%s: refused by the edge hub, retrying (%s)", output, exc)
                self.stopping.wait(attempt_secs)
            except ClientError as exc:
                self.log.debug("%s: not acknowledged yet (%s)", output, exc)
        return False

    def report(self, patch: JsonDict, timeout: float = 10.0) -> None:
        """Patch the module twin's reported properties; offline is logged, not fatal. Skipped
        once stopping (the agent disconnects upstream before it stops its modules)."""
        if self.stopping.is_set():
            return
        try:
            self.client.patch_twin_reported_properties(patch, timeout=timeout)
        except ClientError as exc:
            self.log.info("reported properties not sent: %s", exc)

    def _patch(self, patch: JsonDict) -> None:
        for callback in self._callbacks:
            self._apply(callback, patch)

    def _apply(self, callback: SettingsCallback, desired: JsonDict) -> None:
        settings = {k: v for k, v in desired.items() if not k.startswith("$")}
        try:
            callback(settings)
        except (TypeError, ValueError) as exc:
            self.log.warning("ignored desired properties %s: %s", settings, exc)
        for effective in self._effective:
            self.report(effective())


def main_guard(run: Callable[[], None]) -> int:
    """Run a module's main loop; a connection failure is one line on stderr and exit code 1."""
    try:
        run()
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

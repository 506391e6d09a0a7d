"""Client of the emulated FPGA device, and a helper that starts the device process.

    dev = FpgaDevice("/run/edgefleet/fpga0.sock")      # or FpgaDevice.for_device("fpga0")
    dev.load("efficientnet-lite0", "msfp9")            # replaces the card's model (flash delay)
    result = dev.infer(batch)                          # [N, 3, 224, 224] float32
    result.features, result.device_ms, result.host_ms

Needs only numpy (no onnxruntime): modules that get the device path mapped in can use it.
``open_featurizer`` is what ``open_accelerator("fpga-emulator", ...)`` calls.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.fpga.protocol import (
    ConnectionClosed,
    ProtocolError,
    parse_header,
    read_frame,
    send_frame,
)
from modules.accelerators.session import AcceleratorError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.model_store import ModelStore

DEVICE_ENV = "EDGEFLEET_FPGA_DEVICE"  # a socket path or a device name, for modules


class FpgaDeviceError(AcceleratorError):
    """The device answered with an error (``code``) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class InferResult:
    features: npt.NDArray[np.float32]
    device_ms: float  # emulated device latency (cycle model) for the whole batch
    host_ms: float  # wall time the host spent computing it on the device process
    latency: dict[str, Any]  # the cycle model's breakdown
    model: str = ""  # what the card had loaded when it computed this
    precision: str = ""
    outputs: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)  # by name


def resolve_device_path(device: str | Path | None) -> Path:
    """A socket path as given, or the default path of a device name (``fpga0``)."""
    from modules.accelerators.fpga.server import default_socket_path

    value = str(device) if device is not None else os.environ.get(DEVICE_ENV, "fpga0")
    if "/" in value or value.endswith(".sock"):
        return Path(value)
    return default_socket_path(value)


class FpgaDevice:
    """A connection to one emulated card; thread-safe (one request at a time per connection)."""

    def __init__(self, path: str | Path, timeout: float = 120.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_device(cls, device: str = "fpga0", timeout: float = 120.0) -> FpgaDevice:
        return cls(resolve_device_path(device), timeout)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                raise FpgaDeviceError(
                    "unreachable", f"no FPGA emulator device at {self.path}: {exc.strerror or exc}"
                ) from exc
            self._sock = sock
        return self._sock

    def request(
        self, header: dict[str, Any], payload: bytes | memoryview = b""
    ) -> tuple[dict[str, Any], bytearray]:
        """Send one request, return (response header, payload); raise on ``ok: false``."""
        with self._lock:
            for attempt in (0, 1):
                sock = self._connect()
                try:
                    send_frame(sock, header, payload)
                    raw, body = read_frame(sock)
                    break
                except (ConnectionClosed, BrokenPipeError, ConnectionResetError) as exc:
                    self.close()  # the device restarted: reconnect once
                    if attempt:
                        raise FpgaDeviceError(
                            "unreachable", f"device at {self.path} went away"
                        ) from exc
                except (ProtocolError, OSError) as exc:
                    self.close()
                    raise FpgaDeviceError("protocol", f"device at {self.path}: {exc}") from exc
        reply = parse_header(raw)
        if not reply.get("ok"):
            raise FpgaDeviceError(str(reply.get("code", "error")), str(reply.get("error", reply)))
        return reply, body

    def ping(self) -> bool:
        try:
            self.request({"op": "ping"})
            return True
        except FpgaDeviceError:
            return False

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})[0]

    def load(self, model: str, precision: str = "msfp9") -> dict[str, Any]:
        """Flash ``model`` (a supported featurizer in the device's store) at ``precision``."""
        return self.request({"op": "load", "model": model, "precision": precision})[0]

    def infer(self, batch: npt.ArrayLike, network: str | None = None) -> InferResult:
        """Run ``batch`` on the loaded model (``network``: which of a detector's networks)."""
        import math

        import numpy as np

        arr = np.ascontiguousarray(batch, dtype="<f4")
        if arr.ndim == 3:
            arr = arr[None]
        header: dict[str, Any] = {"op": "infer", "shape": list(arr.shape), "dtype": "float32"}
        if network is not None:
            header["network"] = network
        reply, body = self.request(header, arr.tobytes())
        values = np.frombuffer(body, dtype="<f4")
        outputs: dict[str, npt.NDArray[np.float32]] = {}
        at = 0
        for out in reply.get("outputs") or [{"name": "features", "shape": reply["shape"]}]:
            size = math.prod(out["shape"])
            outputs[str(out["name"])] = values[at : at + size].reshape(out["shape"])
            at += size
        return InferResult(
            features=next(iter(outputs.values())),
            outputs=outputs,
            device_ms=float(reply["device_ms"]),
            host_ms=float(reply["host_ms"]),
            latency=reply.get("latency", {}),
            model=str(reply.get("model", "")),
            precision=str(reply.get("precision", "")),
        )

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> FpgaDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceProcess:
    """A device process started by ``start_device_process``; ``stop()`` sends SIGTERM."""

    def __init__(self, proc: subprocess.Popen[bytes], path: Path, device: str) -> None:
        self.proc = proc
        self.path = path
        self.device = device

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)

    def client(self) -> FpgaDevice:
        return FpgaDevice(self.path)


def start_device_process(
    device: str = "fpga0",
    socket_path: str | Path | None = None,
    *,
    model_dir: str | Path | None = None,
    config: str | Path | None = None,
    flash_ms: float | None = None,
    threads: int | None = None,
    load: str | None = None,
    precision: str = "msfp9",
    exit_with_parent: bool = False,
    env: dict[str, str] | None = None,
    log: Any = None,
    timeout: float = 60.0,
) -> DeviceProcess:
    """Start ``edgefleet fpga-emulator serve`` as a child process and wait until it answers.

    For the agent's device plugin and for tests; ``load`` flashes a model at start (in the
    background: ``status()["busy"]`` until done); ``exit_with_parent`` makes the device stop when
    this process dies; ``log`` is a file for the process's stderr.
    """
    path = Path(socket_path) if socket_path is not None else resolve_device_path(device)
    cmd = [sys.executable, "-m", "composition.cli", "fpga-emulator", "serve", "--device", device]
    cmd += ["--socket", str(path)]
    if model_dir is not None:
        cmd += ["--model-dir", str(model_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    if flash_ms is not None:
        cmd += ["--flash-ms", str(flash_ms)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if load is not None:
        cmd += ["--load", load, "--precision", precision]
    if exit_with_parent:
        cmd += ["--parent-pid", str(os.getpid())]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.DEVNULL,
    )
    handle = DeviceProcess(proc, path, device)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FpgaDeviceError(
                "start_failed", f"the device process exited with {proc.returncode} ({path})"
            )
        if path.exists():
            with FpgaDevice(path, timeout=5.0) as dev:
                if dev.ping():
                    return handle
        time.sleep(0.05)
    handle.stop()
    raise FpgaDeviceError("start_failed", f"the device did not answer on {path} in {timeout:.0f} s")


class CardLink:
    """A session's hold on a card: the connection, the device it started when nothing served
    the path (stopped on ``close()``), and the model it needs on the card, flashed again when
    the card lost it (device restarted, or another client flashed another model)."""

    accelerator = "fpga-emulator"

    def __init__(
        self,
        store: ModelStore,
        model: str,
        precision: str,
        device: str | Path | None = None,
        *,
        start: bool = True,
        **_options: Any,  # the other accelerators' options (threads, engine) do not apply
    ) -> None:
        from modules.accelerators.bfp import FORMATS

        if precision not in FORMATS:
            raise AcceleratorError(
                f"the fpga-emulator computes in block floating point: precision must be one of "
                f"{', '.join(FORMATS)}, not {precision!r}"
            )
        self.model = model
        self.precision = precision
        self.notice: str | None = None
        self.last_device_ms: float | None = None
        self.last_host_ms: float | None = None
        self._owned: DeviceProcess | None = None
        self.path = path = resolve_device_path(device)
        self.dev = FpgaDevice(path)
        if not self.dev.ping():
            if not start:
                raise FpgaDeviceError("unreachable", f"no FPGA emulator device at {path}")
            self._owned = start_device_process(
                device=path.stem, socket_path=path, model_dir=store.root, exit_with_parent=True
            )
            atexit.register(self.close)  # callers that never close() must not leak the device
            self.notice = f"started an emulated FPGA device for this session at {path}"
        else:
            device_store = str(self.dev.status().get("model_dir", ""))
            if Path(device_store).resolve() != Path(store.root).resolve():
                self.notice = (
                    f"the device at {path} loads models from its own store {device_store}, "
                    f"not {store.root}"
                )
        try:
            info = self.dev.load(model, precision)
        except Exception:
            self.close()
            raise
        self.load_info = info
        self._card_model = str(info.get("model", model))
        self.engine = (
            f"fpga-emulator {path} ({precision}, onnxruntime BFP rewrite, "
            f"flash {info.get('flash_ms')} ms)"
        )

    def infer(self, batch: npt.NDArray[np.float32], network: str | None = None) -> InferResult:
        """Run on the card, flashing this session's model again (once) if the card lost it."""
        try:
            result: InferResult | None = self.dev.infer(batch, network)
        except FpgaDeviceError as exc:
            if exc.code != "no_model":
                raise
            result = None
        wanted = (self._card_model, self.precision)
        if result is None or (result.model, result.precision) != wanted:
            self.dev.load(self.model, self.precision)
            result = self.dev.infer(batch, network)
            if (result.model, result.precision) != wanted:
                raise FpgaDeviceError(
                    "contended",
                    f"another client keeps replacing the card's model ({result.model} "
                    f"{result.precision} is loaded, this session needs {self.model} "
                    f"{self.precision})",
                )
        self.last_device_ms = result.device_ms
        self.last_host_ms = result.host_ms
        return result

    def close(self) -> None:
        self.dev.close()
        if self._owned is not None:
            self._owned.stop()
            self._owned = None


class FpgaFeaturizer(CardLink):
    """``FeaturizerSession`` over the device: what ``open_accelerator("fpga-emulator")`` returns."""

    def featurize(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.infer(batch).features


def open_featurizer(
    store: ModelStore,
    model: str,
    precision: str,
    device: str | Path | None = None,
    **options: Any,
) -> FpgaFeaturizer:
    """Entry point used by ``open_accelerator("fpga-emulator", ...)``."""
    return FpgaFeaturizer(store, model, precision, device, **options)

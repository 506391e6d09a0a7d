"""The emulated FPGA card as a device process that serves a local UNIX socket.

``edgefleet fpga-emulator serve --device fpga0`` runs ``serve()``. The process owns one emulated
card: it holds one "bitstream" at a time, a featurizer or every network of a detector
(``networks.py``); loading another replaces it after the emulated flash delay. It computes with
block floating point (``rewrite.py`` on onnxruntime) and returns with every result the
emulated device latency (``cycle_model.py``) beside the host wall time. Requests from concurrent
clients are serialized on the card; ``status`` never waits for the card.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.accelerators.bfp import FORMATS, get_format
from modules.accelerators.fpga.cycle_model import CardConfig, load_config
from modules.accelerators.fpga.networks import Network
from modules.accelerators.fpga.protocol import (
    ConnectionClosed,
    ProtocolError,
    parse_header,
    read_frame,
    send_frame,
)
from modules.accelerators.model_store import (
    DATA_DIR_ENV,
    ModelNotFoundError,
    ModelStore,
    StoreError,
)

SOCKET_DIR_ENV = "EDGEFLEET_DEVICE_DIR"
SUPPORTED_FEATURIZERS = ("resnet50", "resnet152", "vgg16", "densenet121", "efficientnet-lite0")
PRECISIONS = tuple(FORMATS)
MAX_BATCH = 64


class DeviceError(Exception):
    """A request the card refuses; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def default_socket_path(device: str = "fpga0") -> Path:
    """``$EDGEFLEET_DEVICE_DIR/<dev>.sock``, ``$EDGEFLEET_DATA_DIR/devices/<dev>.sock``,
    ``/run/edgefleet/<dev>.sock`` when writable (root), else ``$XDG_RUNTIME_DIR`` or /tmp."""
    if os.environ.get(SOCKET_DIR_ENV):
        return Path(os.environ[SOCKET_DIR_ENV]).expanduser() / f"{device}.sock"
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser() / "devices" / f"{device}.sock"
    run = Path("/run/edgefleet")
    if os.access(run if run.exists() else run.parent, os.W_OK):
        return run / f"{device}.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/edgefleet-{os.getuid()}"
    return Path(runtime) / "edgefleet" / f"{device}.sock"


def _canonical(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def supported_name(name: str) -> str | None:
    """The supported featurizer ``name`` refers to (``ResNet-50`` -> ``resnet50``), else None."""
    wanted = _canonical(name)
    for known in SUPPORTED_FEATURIZERS:
        if _canonical(known) == wanted:
            return known
    return None


@dataclass
class Loaded:
    model: str
    precision: str
    networks: dict[str, Network]
    loaded_at: float
    flash_ms: float
    feature_dim: int


@dataclass
class Counters:
    loads: int = 0
    refused: int = 0
    inferences: int = 0
    images: int = 0
    errors: int = 0
    device_ms_total: float = 0.0
    host_ms_total: float = 0.0
    per_op: dict[str, int] = field(default_factory=dict)


class EmulatedCard:
    def __init__(
        self,
        device: str,
        store: ModelStore,
        config: CardConfig,
        threads: int | None = None,
    ) -> None:
        self.device = device
        self.store = store
        self.config = config
        self.threads = threads
        self.lock = threading.Lock()
        self.loaded: Loaded | None = None
        self.busy = ""
        self.counters = Counters()
        self.started = time.time()

    # -- load ----------------------------------------------------------------------------------
    def load(self, model: str, precision: str) -> dict[str, Any]:
        canonical = supported_name(model) or self._checked(model)
        if canonical is None:
            self.counters.refused += 1
            raise DeviceError(
                "unsupported_model",
                f"the {self.config.name} bitstreams support only "
                f"{', '.join(SUPPORTED_FEATURIZERS)}, detectors and imported models whose "
                f"operators it runs; {model!r} is none of them",
            )
        if precision not in PRECISIONS:
            self.counters.refused += 1
            raise DeviceError(
                "unsupported_precision",
                f"precision {precision!r} is not supported (choose {', '.join(PRECISIONS)})",
            )
        with self.lock:
            self.busy = f"flashing {canonical} {precision}"
            try:
                return self._load_locked(canonical, precision)
            finally:
                self.busy = ""

    def _checked(self, ref: str) -> str | None:
        """``ref`` when it names a detector or an imported model whose operators (in every one
        of its networks) the card runs; raises ``unsupported_ops`` naming the others; None when
        it is neither."""
        import onnx

        from modules.accelerators.fpga.networks import fp32_graphs
        from modules.accelerators.fpga.ops import unsupported_ops

        try:
            manifest = self.store.get(ref)
            if manifest.origin != "imported" and manifest.kind != "detector":
                return None
            graphs = [onnx.load(str(path)) for path in fp32_graphs(self.store, manifest)]
        except (StoreError, OSError, KeyError):
            return None
        bad = unsupported_ops((n.domain, n.op_type) for g in graphs for n in g.graph.node)
        if bad:
            self.counters.refused += 1
            raise DeviceError(
                "unsupported_ops",
                f"{ref} uses operators the {self.config.name} card does not run: "
                f"{', '.join(bad)} (see docs/models.md for the supported set)",
            )
        return ref

    def _load_locked(self, model: str, precision: str) -> dict[str, Any]:
        import numpy as np
        import onnx
        import onnxruntime as ort

        from modules.accelerators.cpu import session_options
        from modules.accelerators.fpga.networks import network_specs, weight_count
        from modules.accelerators.fpga.rewrite import RewriteError, rewrite

        start = time.perf_counter()
        try:
            manifest = self.store.get(model)
            specs = network_specs(self.store, manifest)
        except ModelNotFoundError as exc:
            raise DeviceError("model_not_found", str(exc)) from exc
        except (StoreError, KeyError) as exc:  # e.g. an artifact failing its sha256 check
            raise DeviceError("load_failed", str(exc)) from exc
        fmt = get_format(precision)
        prepared = []
        quantized = weights = 0
        skipped: list[str] = []
        for spec in specs:
            try:
                graph = onnx.load(str(spec.path))
                weights += weight_count(graph, spec)
                rewritten, report = rewrite(graph, fmt)
            except (RewriteError, onnx.checker.ValidationError, OSError) as exc:
                raise DeviceError(
                    "load_failed", f"cannot prepare {model}'s {spec.name} for {precision}: {exc}"
                ) from exc
            quantized += report.quantized_nodes
            skipped += [f"{spec.name}: {why}" if len(specs) > 1 else why for why in report.skipped]
            try:
                session = ort.InferenceSession(
                    rewritten.SerializeToString(),
                    session_options(self.threads),
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise DeviceError(
                    "load_failed", f"onnxruntime refused the {precision} {spec.name}: {exc}"
                ) from exc
            outputs = spec.outputs or [o.name for o in session.get_outputs()]
            prepared.append((spec, session, outputs, graph))
        bitstream_bytes = weights * fmt.bits_per_value / 8
        networks = {
            spec.name: Network(
                spec, session, outputs, graph, self.config, fmt.bits_per_value, bitstream_bytes
            )
            for spec, session, outputs, graph in prepared
        }
        for net in networks.values():
            warm = np.zeros(net.reference_shape(), np.float32)
            for _ in range(2):  # warm-up inside the flash window: first runs allocate
                net.session.run(net.output_names, {net.spec.input_name: warm})
        flash_ms = self.config.flash_ms + self.config.flash_ms_per_mbyte * bitstream_bytes / 1e6
        # The emulated flash takes flash_ms of wall time; host preparation happens within it.
        remaining = flash_ms / 1000.0 - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        previous = self.loaded.model if self.loaded else None
        self.loaded = Loaded(
            model=model,
            precision=precision,
            networks=networks,
            loaded_at=time.time(),
            flash_ms=flash_ms,
            feature_dim=manifest.feature_dim,
        )
        self.counters.loads += 1
        described = {name: net.describe() for name, net in networks.items()}
        first = next(iter(networks.values()))
        return {
            "model": model,
            "precision": precision,
            "replaced": previous,
            "flash_ms": round(flash_ms, 3),
            "load_wall_ms": round((time.perf_counter() - start) * 1000.0, 3),
            "quantized_layers": quantized,
            "skipped_layers": skipped,
            "weights_mbytes": round(bitstream_bytes / 1e6, 3),
            "weights_on_chip": bitstream_bytes <= self.config.onchip_weight_mbytes * 1e6,
            "gmacs": round(sum(d["gmacs"] or 0.0 for d in described.values()), 4),
            "feature_dim": manifest.feature_dim,
            "input_shape": list(first.spec.input_shape),
            "networks": described,
        }

    # -- infer ---------------------------------------------------------------------------------
    def infer(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        import numpy as np

        shape = header.get("shape")
        if header.get("dtype", "float32") != "float32":
            raise DeviceError("bad_request", "only float32 tensors are accepted")
        if (
            not isinstance(shape, list)
            or len(shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise DeviceError("bad_request", "infer needs 'shape': [N, C, H, W] of positive ints")
        if len(payload) != math.prod(shape) * 4:
            raise DeviceError(
                "bad_request",
                f"payload has {len(payload)} bytes; shape {shape} float32 needs "
                f"{math.prod(shape) * 4}",
            )
        if shape[0] > MAX_BATCH:
            raise DeviceError("bad_request", f"batch {shape[0]} exceeds the card's {MAX_BATCH}")
        asked = header.get("network")
        if asked is not None and not isinstance(asked, str):
            raise DeviceError("bad_request", "'network' must be a string")
        with self.lock:
            loaded = self.loaded
            if loaded is None:
                raise DeviceError("no_model", "no model is loaded on the card; send load first")
            net = _pick_network(loaded, asked)
            expected = net.spec.input_shape[1:]
            if any(isinstance(e, int) and e != s for e, s in zip(expected, shape[1:], strict=True)):
                raise DeviceError(
                    "bad_request",
                    f"{loaded.model}'s {net.spec.name} takes "
                    f"[N, {', '.join(map(str, expected))}], got {shape}",
                )
            try:
                cycle = net.cycle_model(shape)
            except Exception as exc:  # shape inference of an input the network cannot take
                raise DeviceError(
                    "bad_request", f"{loaded.model}'s {net.spec.name} cannot take {shape}: {exc}"
                ) from exc
            batch = np.frombuffer(payload, dtype="<f4").reshape(shape)
            start = time.perf_counter()
            results = _run(net, batch)
            host_ms = (time.perf_counter() - start) * 1000.0
            results = [np.ascontiguousarray(r, dtype="<f4") for r in results]
            out_bytes = sum(r.nbytes for r in results)
            latency = cycle.latency(shape[0], input_bytes=len(payload), output_bytes=out_bytes)
            self.counters.inferences += 1
            self.counters.images += shape[0]
            self.counters.device_ms_total += latency.device_ms
            self.counters.host_ms_total += host_ms
        response = {
            "model": loaded.model,
            "precision": loaded.precision,
            "network": net.spec.name,
            "shape": list(results[0].shape),
            "outputs": [
                {"name": name, "shape": list(r.shape)}
                for name, r in zip(net.output_names, results, strict=True)
            ],
            "dtype": "float32",
            "device_ms": round(latency.device_ms, 4),
            "host_ms": round(host_ms, 4),
            "latency": latency.model_dump(),
        }
        return response, b"".join(r.tobytes() for r in results)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        c = self.counters
        return {
            "device": self.device,
            "card": self.config.model_dump(),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "busy": self.busy or None,
            "model": loaded.model if loaded else None,
            "precision": loaded.precision if loaded else None,
            "loaded_at": loaded.loaded_at if loaded else None,
            "feature_dim": loaded.feature_dim if loaded else None,
            "networks": list(loaded.networks) if loaded else [],
            "supported_models": list(SUPPORTED_FEATURIZERS),
            "supported_precisions": list(PRECISIONS),
            "model_dir": str(self.store.root),
            "counters": {
                "loads": c.loads,
                "refused": c.refused,
                "inferences": c.inferences,
                "images": c.images,
                "errors": c.errors,
                "device_ms_total": round(c.device_ms_total, 3),
                "host_ms_total": round(c.host_ms_total, 3),
            },
        }

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        if op == "ping":
            return {"device": self.device}, b""
        if op == "status":
            return self.status(), b""
        if op == "load":
            model, precision = header.get("model"), header.get("precision", "msfp9")
            if not isinstance(model, str) or not isinstance(precision, str):
                raise DeviceError("bad_request", "load needs 'model' and 'precision' strings")
            return self.load(model, precision), b""
        if op == "infer":
            return self.infer(header, payload)
        raise DeviceError("bad_request", f"unknown op {op!r} (ping, status, load, infer)")


SMALL_IMAGE = 3 * 64 * 64  # inputs up to this many values run as one batch


def _pick_network(loaded: Loaded, asked: str | None) -> Network:
    if asked is None:
        if len(loaded.networks) == 1:
            return next(iter(loaded.networks.values()))
        raise DeviceError(
            "bad_request",
            f"{loaded.model} holds several networks ({', '.join(loaded.networks)}): "
            "name one with 'network'",
        )
    if asked not in loaded.networks:
        raise DeviceError(
            "bad_request",
            f"{loaded.model} has no network {asked!r} ({', '.join(loaded.networks)})",
        )
    return loaded.networks[asked]


def _run(net: Network, batch: Any) -> list[Any]:
    """Every output of ``net`` for ``batch``. Large inputs run one image at a time: the inserted
    quantizers stream each activation several times, which stays in cache for one image but not
    for a batch (measured ~20% faster); small ones (detector crops) in one run. BFP blocks never
    span two images, so both give the same values."""
    import numpy as np

    feed = net.spec.input_name
    if batch[0].size <= SMALL_IMAGE:
        return list(net.session.run(net.output_names, {feed: batch}))
    parts = [net.session.run(net.output_names, {feed: batch[i : i + 1]}) for i in range(len(batch))]
    if len(parts) == 1:
        return list(parts[0])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(net.output_names))]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        card = self.server.card
        sock: socket.socket = self.request
        while True:
            try:
                raw, payload = read_frame(sock)
            except ConnectionClosed:
                return
            except ProtocolError as exc:
                card.counters.errors += 1
                with contextlib.suppress(OSError):
                    send_frame(sock, {"ok": False, "code": "protocol", "error": str(exc)})
                return
            except OSError:
                return
            try:
                header = parse_header(raw)
                response, body = card.handle(header, payload)
                reply: dict[str, Any] = {"ok": True, **response}
            except DeviceError as exc:
                card.counters.errors += 1
                reply, body = {"ok": False, "code": exc.code, "error": str(exc)}, b""
            except ValueError as exc:  # bad JSON / UTF-8
                card.counters.errors += 1
                reply, body = (
                    {"ok": False, "code": "bad_request", "error": f"bad header: {exc}"},
                    b"",
                )
            except Exception as exc:  # never let one request take the device down
                card.counters.errors += 1
                reply = {"ok": False, "code": "internal", "error": f"{type(exc).__name__}: {exc}"}
                body = b""
            try:
                send_frame(sock, reply, body)
            except OSError:
                return


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, card: EmulatedCard) -> None:
        self.card = card
        super().__init__(path, _Handler)


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a killed device; refuse if a live device serves it."""
    if len(os.fsencode(str(path))) > 107:
        raise DeviceError("bad_path", f"socket path is too long for AF_UNIX (>107 bytes): {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise DeviceError("bad_path", f"cannot use {path}: {exc}") from exc
        path.unlink(missing_ok=True)  # stale: nobody listens
        return
    finally:
        probe.close()
    raise DeviceError("busy", f"another device process already serves {path}")


def serve(
    device: str = "fpga0",
    socket_path: Path | None = None,
    model_dir: Path | None = None,
    config_path: Path | None = None,
    flash_ms: float | None = None,
    threads: int | None = None,
    ready: threading.Event | None = None,
    preload: str | None = None,
    precision: str = "msfp9",
    parent_pid: int | None = None,
) -> int:
    """Run the device until SIGTERM/SIGINT; remove the socket on the way out.

    ``preload`` flashes that model in the background once the socket is up (``status`` shows
    ``busy`` meanwhile; infer requests wait for it). With ``parent_pid`` the device stops when
    that process is gone (a device started for one session must not outlive it)."""
    config = load_config(config_path)
    if flash_ms is not None:
        config = config.model_copy(update={"flash_ms": flash_ms, "flash_ms_per_mbyte": 0.0})
    path = socket_path or default_socket_path(device)
    card = EmulatedCard(device, ModelStore(model_dir), config, threads)
    _claim_socket_path(path)
    server = _Server(str(path), card)
    os.chmod(path, 0o660)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"{device}: serving the emulated {config.name} card on {path}", file=sys.stderr, flush=True
    )
    if ready is not None:
        ready.set()
    if parent_pid is not None:

        def _watch_parent() -> None:
            while not stopping.is_set():
                if os.getppid() != parent_pid:  # reparented: our starter died
                    _stop(signal.SIGTERM, None)
                    return
                time.sleep(0.5)

        threading.Thread(target=_watch_parent, daemon=True).start()
    if preload:

        def _preload() -> None:
            try:
                card.load(preload, precision)
                print(f"{device}: loaded {preload} {precision}", file=sys.stderr, flush=True)
            except DeviceError as exc:
                print(f"{device}: preload failed: {exc}", file=sys.stderr, flush=True)

        loader = threading.Thread(target=_preload, daemon=True)
        loader.start()
        while loader.is_alive() and not card.busy and card.loaded is None:
            time.sleep(0.005)  # serve once the flash holds the card: infer waits for it
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if card.lock.acquire(timeout=30):  # let an in-flight load/infer finish first
            card.lock.release()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"{device}: stopped, {path} removed", file=sys.stderr, flush=True)
    return 0

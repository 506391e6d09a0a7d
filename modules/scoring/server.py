"""One scoring server: the serving core with its gRPC and HTTP front ends.

``edgefleet serve`` and the scoring module (``python -m modules.scoring``) both run this.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modules.scoring.core import Limits, ServingCore

if TYPE_CHECKING:
    import grpc

    from modules.scoring.http import ScoringServer

DEFAULT_GRPC_PORT = 50051
DEFAULT_HTTP_PORT = 5001
GRACE_S = 5.0  # how long admitted calls may finish on shutdown


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    grpc_port: int | None = DEFAULT_GRPC_PORT  # None: no gRPC front end
    http_port: int | None = DEFAULT_HTTP_PORT  # None: no HTTP front end
    tls_cert: Path | None = None  # gRPC TLS (PEM chain + key); h2c without
    tls_key: Path | None = None
    score_upstream: str | None = None  # an entry script's HTTP server that answers POST /score


class Servers:
    """The running front ends of one core; ``stop`` closes them (idempotent)."""

    def __init__(self, core: ServingCore, listen: Listen) -> None:
        self.core = core
        self.grpc: grpc.Server | None = None
        self.http: ScoringServer | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._stopped = threading.Event()
        try:
            self._start(listen)
        except BaseException:
            self.stop()
            raise

    def _start(self, listen: Listen) -> None:
        if listen.grpc_port is not None:
            from modules.scoring.grpc_api import Tls, start_grpc

            tls = None
            if listen.tls_cert is not None or listen.tls_key is not None:
                if listen.tls_cert is None or listen.tls_key is None:
                    raise ValueError("gRPC TLS needs both a certificate and a key")
                tls = Tls(listen.tls_cert.read_bytes(), listen.tls_key.read_bytes())
            self.grpc, self.grpc_port = start_grpc(self.core, listen.host, listen.grpc_port, tls)
        if listen.http_port is not None:
            from modules.scoring.http import ScoringServer

            self.http = ScoringServer(
                self.core, listen.host, listen.http_port, listen.score_upstream
            )
            self.http.start()
            self.http_port = self.http.port

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.core.drain(GRACE_S)  # new calls are refused; admitted ones finish first
        if self.grpc is not None:
            self.grpc.stop(0).wait()
        if self.http is not None:
            self.http.stop()


def _port(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "")
    return int(value) if value else None


def listen_from_env(env: Mapping[str, str]) -> Listen:
    """The scoring module's front ends: each only when its port variable is set."""
    cert, key = env.get("SCORING_TLS_CERT"), env.get("SCORING_TLS_KEY")
    return Listen(
        host=env.get("SCORING_HTTP_HOST", "127.0.0.1"),
        grpc_port=_port(env, "SCORING_GRPC_PORT"),
        http_port=_port(env, "SCORING_HTTP_PORT"),
        tls_cert=Path(cert) if cert else None,
        tls_key=Path(key) if key else None,
        score_upstream=env.get("SCORING_SCORE_UPSTREAM") or None,
    )


def limits_from_env(env: Mapping[str, str]) -> Limits:
    default = Limits()
    return Limits(
        workers=int(env.get("SCORING_WORKERS") or default.workers),
        queue=int(env.get("SCORING_QUEUE") or default.queue),
        max_image_bytes=int(env.get("SCORING_MAX_IMAGE_BYTES") or default.max_image_bytes),
    )

"""Wire format of the emulated FPGA device socket (a local UNIX stream socket).

Every message, in both directions, is one frame::

    magic   4 bytes  b"EFD1"
    hlen    uint32   big-endian, length of the header (1 .. MAX_HEADER)
    plen    uint32   big-endian, length of the payload (0 .. MAX_PAYLOAD)
    header  hlen bytes, a UTF-8 JSON object
    payload plen bytes, raw tensor data (little-endian float32, C order) or empty

Requests carry ``{"op": ...}``; every request gets exactly one response frame, in order, with
``{"ok": true, ...}`` or ``{"ok": false, "code": ..., "error": ...}``. A frame with a bad magic or
over-long lengths cannot be resynchronised: the device answers with an error and closes the
connection. Other bad requests (bad JSON, unknown op, wrong tensor size) are answered with an
error and the connection stays usable.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

MAGIC = b"EFD1"
PREFIX = struct.Struct(">4sII")
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 128 * 1024 * 1024  # batch 64 of 3x299x299 float32 fits


class ProtocolError(Exception):
    """The peer sent something that is not a frame; the connection must be closed."""


class ConnectionClosed(Exception):
    """The peer closed the connection between frames."""


def encode_frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(MAGIC, len(head), len(payload)) + head + bytes(payload)


def send_frame(
    sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b""
) -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(PREFIX.pack(MAGIC, len(head), len(payload)) + head)
    if len(payload):
        sock.sendall(payload)


def _read_exact(sock: socket.socket, n: int, *, at_start: bool = False) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if at_start and got == 0:
                raise ConnectionClosed("peer closed the connection")
            raise ProtocolError(f"connection closed mid-frame ({got} of {n} bytes)")
        got += k
    return buf


def read_frame(sock: socket.socket) -> tuple[bytes, bytearray]:
    """Read one frame; return (raw header bytes, payload). Header parsing is the caller's job."""
    magic, hlen, plen = PREFIX.unpack(_read_exact(sock, PREFIX.size, at_start=True))
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if not 0 < hlen <= MAX_HEADER:
        raise ProtocolError(f"header length {hlen} out of range (1..{MAX_HEADER})")
    if plen > MAX_PAYLOAD:
        raise ProtocolError(f"payload length {plen} exceeds {MAX_PAYLOAD}")
    head = bytes(_read_exact(sock, hlen))
    payload = _read_exact(sock, plen) if plen else bytearray()
    return head, payload


def parse_header(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object header; ValueError when it is not one."""
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("header is not a JSON object")
    return value

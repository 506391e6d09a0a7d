"""Drives Microsoft's unmodified device SDK (azure-iot-device) against a hub; runs in the SDK's
own virtualenv (scripts/device-sdk-venv), so it imports nothing of edgefleet.

Prints one JSON object per line on stdout: ``connected``, ``sent``, ``twin``, ``reported``,
``ready`` (handlers installed), then ``desired``, ``method``, ``c2d`` as they arrive, or
``error``. Reads commands from stdin: ``quit``.

Usage: device_sdk_driver.py --ca CA_PEM (--cs CONNECTION_STRING [--module] [--websockets]
                             | --x509 CERT KEY HOST DEVICE)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from azure.iot.device import (
    X509,
    IoTHubDeviceClient,
    IoTHubModuleClient,
    Message,
    MethodResponse,
)

_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    with _lock:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def make_client(args: argparse.Namespace) -> Any:
    ca = open(args.ca).read()
    if args.x509:
        cert, key, host, device = args.x509
        return IoTHubDeviceClient.create_from_x509_certificate(
            X509(cert, key), hostname=host, device_id=device, server_verification_cert=ca
        )
    cls = IoTHubModuleClient if args.module else IoTHubDeviceClient
    return cls.create_from_connection_string(
        args.cs, server_verification_cert=ca, websockets=args.websockets
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cs")
    parser.add_argument("--module", action="store_true")
    parser.add_argument("--x509", nargs=4)
    parser.add_argument("--connect-only", action="store_true")
    parser.add_argument("--websockets", action="store_true")  # MQTT over wss://HOST:443
    args = parser.parse_args()
    client = make_client(args)
    try:
        client.connect()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        emit("error", stage="connect", type=type(exc).__name__, message=str(exc))
        return 1
    emit("connected")
    if args.connect_only:
        client.shutdown()
        return 0

    msg = Message(b'{"temp": 21.5}', message_id="sdk-msg-1", content_encoding="utf-8")
    msg.content_type = "application/json"
    msg.correlation_id = "corr-7"
    msg.custom_properties["level"] = "high & mighty"
    msg.custom_properties["site"] = "a/b"
    client.send_message(msg)
    emit("sent", messageId="sdk-msg-1")

    twin = client.get_twin()
    emit("twin", twin=twin)
    client.patch_twin_reported_properties({"firmware": "1.2.3", "nested": {"x": 1}})
    emit("reported")

    def on_desired(patch: dict[str, Any]) -> None:
        emit("desired", patch=patch)

    def on_method(request: Any) -> None:
        emit("method", name=request.name, payload=request.payload)
        body = {"echo": request.payload, "method": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 201, body))

    def on_message(message: Any) -> None:
        emit(
            "c2d",
            data=message.data.decode(errors="replace"),
            messageId=message.message_id,
            properties=message.custom_properties,
        )

    client.on_twin_desired_properties_patch_received = on_desired
    client.on_method_request_received = on_method
    if not args.module:
        client.on_message_received = on_message
    emit("ready")
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    client.shutdown()
    emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An IoT Edge module written against Microsoft's unmodified device SDK (azure-iot-device): the
agent runs it as a process with IoT Edge's environment. Runs in the SDK's own virtualenv, so it
imports nothing of edgefleet.

It prints one JSON object per line (the agent keeps them in the module's log): ``connected``,
``sent`` (with ``--send OUTPUT``), ``twin``, ``reported``, ``ready``, then ``input``, ``desired``
and ``method`` as they arrive; with ``--invoke MODULE``, ``invoked``: the answer of that module's
method ``ping``, called module to module through the gateway. It reports every desired
``$version`` it receives as the reported property ``seenDesired``. With ``--burst-on FILE`` it
sends three more messages once FILE exists (``burst``). It runs until the agent stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    with _lock:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def invoke(client: Any, target: str) -> None:
    """Module to module through the gateway (retried until the target has connected)."""
    params = {"methodName": "ping", "payload": {"n": 1}, "responseTimeoutInSeconds": 30}
    for _ in range(120):
        try:
            answer = client.invoke_method(params, os.environ["IOTEDGE_DEVICEID"], target)
        except Exception as exc:  # noqa: BLE001 - the target may not be connected yet
            emit("invoke_retry", message=str(exc))
            time.sleep(0.5)
            continue
        emit("invoked", answer=answer)
        return
    emit("error", stage="invoke", message="the target never answered")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--send", metavar="OUTPUT")
    parser.add_argument("--burst-on", metavar="FILE", help="send 3 more once FILE exists")
    parser.add_argument("--no-twin", action="store_true", help="no hub behind the edge hub")
    parser.add_argument("--invoke", metavar="MODULE", help="call method 'ping' of MODULE")
    args = parser.parse_args()
    module_id = os.environ["IOTEDGE_MODULEID"]
    client = IoTHubModuleClient.create_from_edge_environment()

    def on_input(message: Any) -> None:
        emit(
            "input",
            input=message.input_name,
            data=message.data.decode(errors="replace"),
            messageId=message.message_id,
            properties=message.custom_properties,
        )

    def on_desired(patch: dict[str, Any]) -> None:
        emit("desired", patch=patch)
        client.patch_twin_reported_properties({"seenDesired": patch.get("$version")})

    def on_method(request: Any) -> None:
        emit("method", name=request.name, payload=request.payload)
        body = {"pong": request.payload, "by": module_id}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, body))

    client.on_message_received = on_input
    client.on_twin_desired_properties_patch_received = on_desired
    client.on_method_request_received = on_method
    try:
        client.connect()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        emit("error", stage="connect", type=type(exc).__name__, message=str(exc))
        return 1
    emit("connected")
    if args.send:
        msg = Message(json.dumps({"from": module_id}), message_id=f"{module_id}-1")
        msg.content_type = "application/json"
        msg.content_encoding = "utf-8"
        msg.custom_properties["kind"] = "edge sdk"
        client.send_message_to_output(msg, args.send)
        emit("sent", output=args.send)
    if not args.no_twin:
        emit("twin", twin=client.get_twin())
        client.patch_twin_reported_properties({"sdkModule": module_id})
        emit("reported")
    emit("ready")
    if args.invoke:
        invoke(client, args.invoke)
    if args.send and args.burst_on:
        while not os.path.exists(args.burst_on):
            time.sleep(0.05)
        for i in range(2, 5):
            msg = Message(json.dumps({"from": module_id, "i": i}), message_id=f"{module_id}-{i}")
            client.send_message_to_output(msg, args.send)
        emit("burst")
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

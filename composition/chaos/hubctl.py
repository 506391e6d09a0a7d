"""Run inside the hub's namespace: ``python -m composition.chaos.hubctl URL TOKEN create
[--edge] ID...`` waits for the hub, creates the devices and prints, per device, its MQTT
credentials (or, with ``--edge``, its agent configuration) as one JSON object;
``... deploy ID FILE`` applies a deployment (``modulesContent``) to an edge device;
``... twin ID MODULE`` prints a module twin; ``... reported ID...`` prints the ``$edgeAgent``
reported properties of each device as one JSON object; ``... tag ID...`` sets the tag
``chaos='1'`` on each device; ``... configure FILE`` PUTs a configuration (fleet deployment) and
``... configuration ID`` prints one; ``... probe SECONDS METHOD_TIMEOUT ID...`` for SECONDS
patches ``desired.chaosSeq`` (1, 2, ...) of every device and calls a direct method on each
(``responseTimeoutInSeconds`` METHOD_TIMEOUT), one call after the other per device, and prints
the patches made per device and every call's status and duration (``twincheck``)."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgefleet.hubclient import HubClient, HubClientError


def _wait(api: HubClient) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if api.health() is not None:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the hub did not answer")
        time.sleep(0.2)


def _create(api: HubClient, args: list[str]) -> dict[str, Any]:
    from cloud_hub.client_cli.agent_config import fetch_agent_config

    edge = args[:1] == ["--edge"]
    out: dict[str, Any] = {}
    for device in args[1:] if edge else args:
        if edge:
            api.create_device(device, {"capabilities": {"iotEdge": True}})
            out[device] = fetch_agent_config(api, device)
        else:
            api.create_device(device)
            out[device] = api.request("GET", f"/devices/{device}/mqttCredentials").json()
    return out


PROBE_PAUSE = 0.25  # seconds between two patches, and between two calls to one device
HTTP_SLACK = 30.0  # the HTTP client's own timeout beyond the method's: a hang is measured


def _patches(url: str, token: str, devices: list[str], until: float) -> dict[str, int]:
    made = dict.fromkeys(devices, 0)
    with HubClient(url, token) as api:
        while True:  # at least one round, however late this thread started
            for device in devices:
                desired = {"chaosSeq": made[device] + 1}
                try:
                    api.patch_twin(device, {"properties": {"desired": desired}})
                except HubClientError:
                    continue  # not made: the counter stays
                made[device] += 1
            if time.monotonic() >= until:
                return made
            time.sleep(PROBE_PAUSE)


def _calls(url: str, token: str, device: str, timeout: float, until: float) -> list[dict[str, Any]]:
    body = {"methodName": "chaosPing", "responseTimeoutInSeconds": timeout}
    out: list[dict[str, Any]] = []
    with HubClient(url, token, timeout=timeout + HTTP_SLACK) as api:
        while True:  # at least one call, however late this thread started
            started = time.monotonic()
            try:
                answer = api.request("POST", f"/twins/{device}/methods", json=body).json()
                status = int(answer.get("status", 0))  # the device's own status
            except HubClientError as exc:
                status = exc.status
            took = round(time.monotonic() - started, 3)
            out.append({"device": device, "status": status, "seconds": took})
            if time.monotonic() >= until:
                return out
            time.sleep(PROBE_PAUSE)


def _probe(url: str, token: str, args: list[str]) -> dict[str, Any]:
    seconds, timeout, devices = float(args[0]), float(args[1]), args[2:]
    until = time.monotonic() + seconds
    with ThreadPoolExecutor(len(devices) + 1) as pool:
        patches = pool.submit(_patches, url, token, devices, until)
        calls = [pool.submit(_calls, url, token, d, timeout, until) for d in devices]
        return {"patches": patches.result(), "calls": [c for f in calls for c in f.result()]}


def main(argv: list[str]) -> int:
    url, token, command, *args = argv
    if command == "probe":
        print(json.dumps(_probe(url, token, args)))
        return 0
    with HubClient(url, token) as api:
        _wait(api)
        if command == "create":
            print(json.dumps(_create(api, args)))
        elif command == "deploy":
            api.apply_configuration_content(args[0], json.loads(Path(args[1]).read_text()))
        elif command == "reported":
            twins = {d: api.get_twin(d, "$edgeAgent") for d in args}
            print(json.dumps({d: twin["properties"]["reported"] for d, twin in twins.items()}))
        elif command == "tag":
            for device in args:
                api.patch_twin(device, {"tags": {"chaos": "1"}})
        elif command == "configure":
            body = json.loads(Path(args[0]).read_text())
            api.request("PUT", f"/configurations/{body['id']}", json=body)
        elif command == "configuration":
            print(json.dumps(api.get_configuration(args[0])))
        elif command == "twin":
            print(json.dumps(api.request("GET", f"/twins/{args[0]}/modules/{args[1]}").json()))
        else:
            raise SystemExit(f"unknown command {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

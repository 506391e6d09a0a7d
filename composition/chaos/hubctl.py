"""Run inside the hub's namespace: ``python -m composition.chaos.hubctl URL TOKEN create
[--edge] ID...`` waits for the hub, creates the devices and prints, per device, its MQTT
credentials (or, with ``--edge``, its agent configuration) as one JSON object;
``... deploy ID FILE`` applies a deployment (``modulesContent``) to an edge device;
``... twin ID MODULE`` prints a module twin; ``... reported ID...`` prints the ``$edgeAgent``
reported properties of each device as one JSON object; ``... tag ID...`` sets the tag
``chaos='1'`` on each device; ``... configure FILE`` PUTs a configuration (fleet deployment) and
``... configuration ID`` prints one."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from edgefleet.hubclient import HubClient


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


def main(argv: list[str]) -> int:
    url, token, command, *args = argv
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

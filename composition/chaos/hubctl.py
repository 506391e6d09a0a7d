"""Run inside the hub's namespace (``python -m composition.chaos.hubctl URL TOKEN ID...``):
waits for the hub, creates the devices and prints their MQTT credentials as one JSON object."""

from __future__ import annotations

import json
import sys
import time

from edgefleet.hubclient import HubClient


def main(argv: list[str]) -> int:
    url, token, *devices = argv
    with HubClient(url, token) as api:
        deadline = time.monotonic() + 90
        while True:
            try:
                if api.health() is not None:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the hub did not answer")
            time.sleep(0.2)
        creds = {}
        for device in devices:
            api.create_device(device)
            creds[device] = api.request("GET", f"/devices/{device}/mqttCredentials").json()
    print(json.dumps(creds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

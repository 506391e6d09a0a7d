"""``python -m modules.simulated_sensor``: temperature/humidity telemetry on ``temperatureOutput``.

Settings: twin desired ``SendInterval`` (seconds, default env ``SendInterval`` or 5) and
``SendData`` (false pauses); env ``MessageCount`` (stop sending after that many; -1: unlimited).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from edgefleet.sdk.module_client import Message
from modules.module_runtime import ModuleRuntime, env_float, main_guard
from modules.simulated_sensor.sensor import SimulatedMachine

OUTPUT = "temperatureOutput"


class SensorSettings:
    def __init__(self) -> None:
        self.interval = max(0.01, env_float("SendInterval", 5.0))
        self.send_data = True

    def reported(self) -> dict[str, Any]:
        return {"SendInterval": self.interval, "SendData": self.send_data}

    def apply(self, desired: dict[str, Any]) -> None:
        if "SendInterval" in desired:
            self.interval = max(0.01, float(desired["SendInterval"]))
        if "SendData" in desired:
            self.send_data = bool(desired["SendData"])


def run() -> None:
    settings = SensorSettings()
    limit = int(os.environ.get("MessageCount", "-1") or "-1")
    machine = SimulatedMachine()
    with ModuleRuntime("simulated_sensor") as rt:
        rt.on_settings(settings.apply, settings.reported)
        sent = 0
        while not rt.stopping.is_set() and (limit < 0 or sent < limit):
            if settings.send_data:
                body = machine.reading()
                message = Message.from_body(body)
                message.custom_properties["sensorType"] = "temperature"
                if rt.send(message, OUTPUT):
                    sent += 1
            rt.stopping.wait(settings.interval)
        rt.log.info("sent %d messages", sent)


if __name__ == "__main__":
    sys.exit(main_guard(run))

"""The simulated machine: temperature climbs to a limit and resets; ambient values wander."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from edgefleet.utctime import utc_now, utc_text


@dataclass
class SimulatedMachine:
    machine_min: float = 21.0
    machine_max: float = 100.0
    ambient_temperature: float = 21.0
    humidity: float = 25.0
    rng: random.Random = field(default_factory=random.Random)
    _machine: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._machine = self.machine_min

    def reading(self) -> dict[str, Any]:
        """One telemetry body: machine temperature/pressure, ambient temperature/humidity."""
        if self._machine >= self.machine_max:
            self._machine = self.machine_min
        self._machine = min(self.machine_max, self._machine + self.rng.uniform(0.5, 1.5))
        # pressure follows temperature (a closed vessel), as in the original sample's shape
        pressure = 1.0 + (self._machine - self.machine_min) * 0.12
        ambient = self.ambient_temperature + self.rng.uniform(-0.5, 0.5)
        humidity = min(100.0, max(0.0, self.humidity + self.rng.uniform(-1.0, 1.0)))
        return {
            "machine": {"temperature": round(self._machine, 3), "pressure": round(pressure, 3)},
            "ambient": {"temperature": round(ambient, 3), "humidity": round(humidity, 3)},
            "timeCreated": utc_text(utc_now()),
        }

"""Simulated temperature/humidity sensor (the shape of IoT Edge's SimulatedTemperatureSensor)."""

"""The hub's MQTT side: telemetry ingest, twin sync, direct methods and presence."""

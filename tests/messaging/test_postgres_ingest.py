"""Ingest on PostgreSQL: the same migrations and duplicate suppression as on SQLite."""

from __future__ import annotations

from pathlib import Path

from edgefleet import protocol as p
from tests.support.hub import running_hub
from tests.support.mqtt import create_device, device_client, stop_managed_mosquitto, wait_until
from tests.support.pg import temporary_database


def test_telemetry_on_postgresql_is_stored_once(tmp_path: Path) -> None:
    with temporary_database() as url:
        try:
            with running_hub(tmp_path, database_url=url, broker="mosquitto") as hub:
                create_device(hub, "pg-dev")
                client = device_client(hub, "pg-dev", tmp_path)
                client.connect(20)
                try:
                    ids = [client.send_message({"i": i}) for i in range(200)]
                    client.send_message(p.Message(b"again", message_id=ids[0]))
                    assert client.wait_for_outbox_empty(30)
                finally:
                    client.shutdown()

                def stored() -> list[str]:
                    with hub.client() as api:
                        body = api.request(
                            "GET", "/devices/pg-dev/messages", params={"limit": 1000}
                        ).json()
                    return [m["messageId"] for m in body["messages"]]

                assert wait_until(lambda: len(stored()) >= 200, 60)
                assert sorted(stored()) == sorted(ids)
        finally:
            stop_managed_mosquitto(tmp_path / "hub")
